#!/usr/bin/env bash
# Runs kernels/cu/attention.cu on the CPU, without a GPU: cuda_emu.h gives each CUDA thread an
# OS thread (blocks one after another, __syncthreads a barrier, shuffles through a per-warp
# buffer), and attention_emu.cpp launches the kernels in the order and with the grids of
# kernels/src/launch/attention.rs (forward, delta, dkv, dq) against an independent float64
# reference (plain softmax over the visible keys and its backward). It checks the kernels'
# logic (indexing, causal masks, tiles, padding of head_dim, barriers, the backward's algebra),
# not their speed or the GPU's memory model. Optional argument: one case's index.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$root/kernels/tools/emu" \
  -DATTENTION_CU="\"$root/kernels/cu/attention.cu\"" -o "$tmp/attention_emu" "$root/kernels/tools/emu/attention_emu.cpp"
"$tmp/attention_emu" "$@"
