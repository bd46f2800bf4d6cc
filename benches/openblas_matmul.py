#!/usr/bin/env python3
"""Reference numbers for the CPU matmul bench: numpy (OpenBLAS) float32 matmul.

Times C = A @ B for square float32 matrices of size 512, 1024 and 2048 with two
BLAS threads (matching the two cores our rayon pool uses) and prints the median
GFLOP/s (2*n^3 flops per product) over several runs.

    python3 benches/openblas_matmul.py
"""
import os

# Must be set before numpy (and so OpenBLAS) is imported.
os.environ["OPENBLAS_NUM_THREADS"] = "2"
os.environ.setdefault("OMP_NUM_THREADS", "2")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def bench(n: int, runs: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: thread pool start, page faults
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def main() -> None:
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    for n, runs in ((512, 50), (1024, 20), (2048, 7)):
        print(f"f32 {n:>4}x{n:<4}: {bench(n, runs):8.1f} GFLOP/s (median of {runs})")


if __name__ == "__main__":
    main()
