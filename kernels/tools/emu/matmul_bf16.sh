#!/usr/bin/env bash
# Runs kernels/cu/matmul_bf16.cu on the CPU, without a GPU: cuda_emu.h gives each CUDA thread
# an OS thread (blocks one after another, __syncthreads a barrier), mma_emu.h the PTX the
# kernels use (cp.async landing as late as wait_group allows, ldmatrix, mma.sync bf16, the
# bf16 rounding), and matmul_bf16_emu.cpp launches the kernels with the grids and split-K plan
# of kernels/src/launch/matmul_bf16.rs on ragged shapes in all four layouts, against a float64
# product. It checks the kernels' logic (indexing, swizzle, fragments, the cp.async ring, edges,
# split-K), not their speed or the GPU's memory model. A few minutes on 2 cores. Optional
# argument: one case's index.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$root/kernels/tools/emu" \
  -DMATMUL_BF16_CU="\"$root/kernels/cu/matmul_bf16.cu\"" -o "$tmp/matmul_bf16_emu" \
  "$root/kernels/tools/emu/matmul_bf16_emu.cpp"
"$tmp/matmul_bf16_emu" "$@"
