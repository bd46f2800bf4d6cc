"""cuBLAS bf16 matmul through PyTorch at the shapes and layouts gpu-check times for
kernels/cu/matmul_bf16.cu (reference only, on the GPU machine): 8192^3 in the four layouts and
the d_model 768 Mamba LM's products at 16384 tokens (per Linear: forward x W^T (nt), dx = dy W
(nn), dW^T = x^T dy (tn)). Operands are views of contiguous tensors, so cuBLAS reads the
transposes in place, as our kernels do. C is bf16 (torch's own choice), and f32 where this torch
has `out_dtype` (bf16 in, f32 out). CUDA-event median of 20 after 3 warm-ups, random inputs.
One line per product, in the form of gpu-check's `matmul_bf16 ...` lines:
    cublas_bf16 <layout> <what> <m>x<n>x<k> <out>: <us> us, <TFLOP/s> TFLOP/s
"""
import torch

T = 16384
LINEARS = [("in_proj", 768, 3072), ("out_proj", 1536, 768), ("x_proj", 1536, 80), ("dt_proj", 48, 1536)]


def operand(rows, cols, col_major):
    """A (rows, cols) bf16 view, stored row-major or column-major (the transpose of a contiguous tensor)."""
    if col_major:
        return torch.randn(cols, rows, device="cuda", dtype=torch.bfloat16).t()
    return torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)


def median_us(f):
    for _ in range(3):
        f()
    times = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        f()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1000.0)
    return sorted(times)[len(times) // 2]


def f32_out(a, b):
    """a @ b with f32 C, or None when this torch cannot (no `out_dtype`)."""
    try:
        return torch.mm(a, b, out_dtype=torch.float32)
    except (TypeError, RuntimeError):
        return None


def report(layout, what, a, b):
    m, k = a.shape
    n = b.shape[1]
    flops = 2.0 * m * n * k
    us = median_us(lambda: torch.mm(a, b))
    print(f"cublas_bf16 {layout} {what} {m}x{n}x{k} bf16: {us:.1f} us, {flops / us / 1e6:.1f} TFLOP/s", flush=True)
    if f32_out(a, b) is not None:
        us = median_us(lambda: f32_out(a, b))
        print(f"cublas_bf16 {layout} {what} {m}x{n}x{k} f32: {us:.1f} us, {flops / us / 1e6:.1f} TFLOP/s", flush=True)


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    s = 8192
    for layout in ["nn", "nt", "tn", "tt"]:
        a, b = operand(s, s, layout[0] == "t"), operand(s, s, layout[1] == "t")
        report(layout, "8192^3", a, b)
        del a, b
    for name, din, dout in LINEARS:
        x = operand(T, din, False)
        w = operand(dout, din, False)  # a Linear weight (out, in)
        dy = operand(T, dout, False)
        report("nt", f"fwd {name}", x, w.t())
        report("nn", f"dx {name}", dy, w)
        report("tn", f"dW {name}", x.t(), dy)


if __name__ == "__main__":
    main()
