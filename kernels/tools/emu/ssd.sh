#!/usr/bin/env bash
# Runs kernels/cu/ssd.cu on the CPU, without a GPU: cuda_emu.h gives each CUDA thread an OS
# thread (blocks one after another, __syncthreads a barrier, shuffles through a per-warp buffer,
# atomics under a mutex), and ssd_emu.cpp launches the kernels in the order of
# kernels/src/launch/ssd.rs against an independent float64 reference (the plain recurrence and
# its adjoint, itself checked against tests/fixtures/reference/ssd.safetensors). It checks the
# kernels' logic (indexing, masks, tiles, barriers, the backward's algebra), not their speed or
# the GPU's memory model. Takes a few minutes on 2 cores. Optional argument: one case's index.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$root/kernels/tools/emu" \
  -DSSD_CU="\"$root/kernels/cu/ssd.cu\"" -o "$tmp/ssd_emu" "$root/kernels/tools/emu/ssd_emu.cpp"
"$tmp/ssd_emu" "$root/tests/fixtures/reference/ssd.safetensors" "$@"
