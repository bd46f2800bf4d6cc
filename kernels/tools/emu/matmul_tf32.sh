#!/usr/bin/env bash
# Runs kernels/cu/matmul_tf32.cu on the CPU, without a GPU (as matmul_bf16.sh: cuda_emu.h gives
# each CUDA thread an OS thread, mma_emu.h the PTX: cp.async, ldmatrix on f32 pairs, ld.shared,
# mma.sync m16n8k8 tf32, cvt.rna.tf32), with the grids and split-K plan of
# kernels/src/launch/matmul_tf32.rs on ragged shapes in all four layouts, 3xTF32 and one pass,
# against a float64 product. Checks the kernels' logic, not their speed. Optional argument: one
# case's index.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$root/kernels/tools/emu" \
  -DMATMUL_TF32_CU="\"$root/kernels/cu/matmul_tf32.cu\"" -o "$tmp/matmul_tf32_emu" \
  "$root/kernels/tools/emu/matmul_tf32_emu.cpp"
"$tmp/matmul_tf32_emu" "$@"
