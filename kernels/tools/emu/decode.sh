#!/usr/bin/env bash
# Runs kernels/cu/decode.cu on the CPU, without a GPU: cuda_emu.h gives each CUDA thread an OS
# thread (blocks one after another, __syncthreads a barrier, shuffles through a per-warp buffer),
# and decode_emu.cpp launches one token of a Mamba-1 and of a Mamba-2 layer as
# kernels/src/launch/decode.rs does, against an independent float64 reference of the step's math.
# It checks the kernels' logic (indexing, the row layout, batch tiles, warps per row, barriers),
# not their speed or the GPU's memory model. Takes ~1 min on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$root/kernels/tools/emu" -I "$root/kernels/cu" \
  -DDECODE_CU="\"$root/kernels/cu/decode.cu\"" -o "$tmp/decode_emu" "$root/kernels/tools/emu/decode_emu.cpp"
"$tmp/decode_emu" "$@"
