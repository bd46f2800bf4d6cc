"""PyTorch's scaled_dot_product_attention, causal, fp32, at the attention benchmark shape
(b 8, L 2048, 12 heads, head_dim 64) on the GPU machine (reference only): forward and
forward + backward, CUDA-event median of 20 after warm-up, for every SDPA backend that takes
fp32 (flash attention proper takes only fp16/bf16, so in fp32 PyTorch picks the
memory-efficient kernel), plus the error of each against a float64 computation on a slice.
tests/gpu_check/attention.rs times ours at the same shape in the same run."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

torch.backends.cuda.matmul.allow_tf32 = False
b, h, l, d = 8, 12, 2048, 64
q, k, v = (torch.randn(b, h, l, d, device="cuda", requires_grad=True) for _ in range(3))
dout = torch.randn(b, h, l, d, device="cuda")


def median_ms(f):
    for _ in range(3):
        f()
    times = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        f()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def forward():
    with torch.no_grad():
        F.scaled_dot_product_attention(q, k, v, is_causal=True)


def both():
    q.grad = k.grad = v.grad = None
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)


flops = 4 * b * h * (l * (l + 1) / 2) * d  # QK^T and PV over the visible pairs
ref = F.scaled_dot_product_attention(*(t[:1, :2].double() for t in (q, k, v)), is_causal=True)
for name, backend in [("default", None), ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]:
    try:
        if backend is None:
            fwd, fb = median_ms(forward), median_ms(both)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            with sdpa_kernel(backend):
                fwd, fb = median_ms(forward), median_ms(both)
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        err = (out[:1, :2].double() - ref).abs().max().item()
        print(f"sdpa {name:<9} b{b} h{h} L{l} d{d} causal fp32: fwd {fwd:.3f} ms ({flops / fwd / 1e9:.1f} TFLOP/s), "
              f"fwd+bwd {fb:.3f} ms, max err vs fp64 {err:.1e}")
    except RuntimeError as e:
        print(f"sdpa {name}: not available ({str(e).splitlines()[0]})")
print(f"peak memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")
