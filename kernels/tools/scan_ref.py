"""The reference selective scan (state-spaces/mamba's selective_scan_cuda, built from its csrc
by `bash kernels/tools/ref-setup.sh build scan`) timed at the shape gpu-check times ours:
B 8, D 1536, L 2048, N 16, with z, delta_bias and softplus (gpu-check's "z,bias,sp" rows),
u/delta/B/C/z in fp32, then in bf16 (A, D, delta_bias stay fp32, as the reference keeps them).
Kernel calls only (no autograd): fwd, bwd, and fwd followed by bwd; CUDA events, 3 warm-up
calls, median of 20 (as gpu-check's Check::time). Usage there, from the repo root:
python3 kernels/tools/scan_ref.py [--batch 8 --dim 1536 --len 2048 --state 16]
"""
import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "ref-build" / "scan")]
import torch  # noqa: E402  (before the extension: the .so links against torch's libraries)
import selective_scan_cuda  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--dim", type=int, default=1536)
p.add_argument("--len", type=int, default=2048)
p.add_argument("--state", type=int, default=16)
args = p.parse_args()
b, d, L, n = args.batch, args.dim, args.len, args.state
dev = "cuda"
g = torch.Generator(device=dev).manual_seed(0)


def timed(f):
    for _ in range(3):
        f()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


print(f"reference selective_scan_cuda, B {b}, D {d}, L {L}, N {n}, z, delta_bias, softplus; "
      f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
for dtype in [torch.float32, torch.bfloat16]:
    rnd = lambda *shape, scale=1.0: (torch.randn(*shape, device=dev, generator=g) * scale).to(dtype)
    u, z = rnd(b, d, L), rnd(b, d, L)
    delta = rnd(b, d, L, scale=0.5)
    B, C = rnd(b, 1, n, L), rnd(b, 1, n, L)  # variable B, C: (batch, groups, N, L)
    A = -torch.rand(d, n, device=dev, generator=g) - 0.5
    D, bias = torch.randn(d, device=dev, generator=g), torch.randn(d, device=dev, generator=g) * 0.1
    dout = rnd(b, d, L)
    out, x, out_z = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True)

    def fwd():
        selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True)

    def bwd():
        selective_scan_cuda.bwd(u, delta, A, B, C, D, z, bias, dout, x, out, None, True, False)

    def both():
        o, xs, _ = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True)
        selective_scan_cuda.bwd(u, delta, A, B, C, D, z, bias, dout, xs, o, None, True, False)

    name = "fp32" if dtype == torch.float32 else "bf16 inputs"
    f, bw, fb = timed(fwd), timed(bwd), timed(both)
    print(f"  {name}: fwd {f:.1f} us, bwd {bw:.1f} us, fwd+bwd {fb:.1f} us")
