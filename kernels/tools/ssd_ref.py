"""The reference Mamba-2 SSD scan (the Triton `mamba_chunk_scan_combined` of state-spaces/mamba,
run from its source in the git-ignored ref/, see docs/SSD.md), timed at the shapes that
tests/gpu_check/ssd.rs times ours: fp32, chunk 256, z, dt_bias, softplus, one group.
Forward, and forward + backward (gradients of every input), median of do_bench, on fresh
random inputs (not zeros). Usage there: PYTHONPATH=ref python3 kernels/tools/ssd_ref.py
"""
import torch
import triton.testing
from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

torch.manual_seed(0)
dev = "cuda"


def inputs(b, l, h, p, n, g=1):
    x = torch.randn(b, l, h, p, device=dev)
    dt = torch.randn(b, l, h, device=dev) * 0.5 - 2.0
    a = -torch.rand(h, device=dev) * 4 - 0.5
    bm = torch.randn(b, l, g, n, device=dev)
    cm = torch.randn(b, l, g, n, device=dev)
    d = torch.randn(h, device=dev)
    z = torch.randn(b, l, h, p, device=dev)
    dt_bias = torch.randn(h, device=dev) * 0.1
    ts = [x, dt, a, bm, cm, d, z, dt_bias]
    return [t.requires_grad_() for t in ts]


def run(ts, chunk=256):
    x, dt, a, bm, cm, d, z, dt_bias = ts
    return mamba_chunk_scan_combined(x, dt, a, bm, cm, chunk, D=d, z=z, dt_bias=dt_bias, dt_softplus=True)


for (b, l, h, p, n) in [(8, 2048, 24, 64, 64), (8, 2048, 24, 64, 128), (1, 65536, 24, 64, 64)]:
    ts = inputs(b, l, h, p, n)
    dout = torch.randn(b, l, h, p, device=dev)
    with torch.no_grad():
        fwd = triton.testing.do_bench(lambda: run(ts), warmup=100, rep=500, return_mode="median")

    def fwd_bwd():
        out = run(ts)
        torch.autograd.grad(out, ts, dout)

    both = triton.testing.do_bench(fwd_bwd, warmup=100, rep=500, return_mode="median")
    print(f"reference SSD (Triton) fp32 B{b} L{l} H{h} P{p} N{n} chunk 256: fwd {fwd:.3f} ms, fwd+bwd {both:.3f} ms")
