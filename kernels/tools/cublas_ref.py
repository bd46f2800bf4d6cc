"""cuBLAS f32 matmul at 4096^3 through PyTorch (reference only, on the GPU machine):
TF32 off, CUDA-event median of 20 after warm-up, random inputs."""
import torch

torch.backends.cuda.matmul.allow_tf32 = False
n = 4096
a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
for _ in range(5):
    a @ b
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    a @ b
    e.record()
    torch.cuda.synchronize()
    times.append(s.elapsed_time(e))
ms = sorted(times)[len(times) // 2]
print(f"cublas_f32 {n}x{n}x{n}: {ms * 1000:.1f} us, {2 * n**3 / ms / 1e9:.1f} TFLOP/s")
