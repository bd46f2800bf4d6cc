"""cuBLAS f32 matmul through PyTorch (reference only, on the GPU machine), at the shapes gpu-check
times for kernels/cu/matmul_tf32.cu and matmul.cu: 4096^3 and 8192^3 (nn), and the d_model 768
Mamba LM's products at 16384 tokens (cublas_bf16_ref.py's list), each with TF32 off (full f32,
the reference's default) and on (torch.backends.cuda.matmul.allow_tf32). CUDA-event median of 20
after 3 warm-ups, random inputs. One line per product:
    cublas_f32 <tf32|f32> <layout> <what> <m>x<n>x<k>: <us> us, <TFLOP/s> TFLOP/s
"""
import torch

from cublas_bf16_ref import LINEARS, T, median_us


def report(mode, layout, what, a, b):
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    m, k = a.shape
    n = b.shape[1]
    us = median_us(lambda: a @ b)
    print(f"cublas_f32 {mode} {layout} {what} {m}x{n}x{k}: {us:.1f} us, {2.0 * m * n * k / us / 1e6:.1f} TFLOP/s", flush=True)


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for mode in ["f32", "tf32"]:
        for s in [4096, 8192]:
            a, b = torch.randn(s, s, device="cuda"), torch.randn(s, s, device="cuda")
            report(mode, "nn", f"{s}^3", a, b)
            del a, b
        for name, din, dout in LINEARS:
            x, w = torch.randn(T, din, device="cuda"), torch.randn(dout, din, device="cuda")
            dy = torch.randn(T, dout, device="cuda")
            report(mode, "nt", f"fwd {name}", x, w.t())
            report(mode, "nn", f"dx {name}", dy, w)
            report(mode, "tn", f"dW {name}", x.t(), dy)


if __name__ == "__main__":
    main()
