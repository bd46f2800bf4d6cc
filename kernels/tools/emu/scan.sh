#!/usr/bin/env bash
# Runs kernels/cu/scan.cu (with scan_pipelined.cuh) on the CPU, without a GPU: cuda_emu.h gives each CUDA thread an OS
# thread (blocks one after another, __syncthreads a barrier, shuffles through a per-warp buffer,
# atomics under a mutex), and scan_emu.cpp launches the forward (v1-v3, and v3 on bf16 inputs) and backward (v1-v4, v4 on bf16,
# each with its reduce kernel) kernels as kernels/src/launch/scan.rs does, against an independent
# float64 reference (the plain recurrence and its adjoint, itself checked against
# tests/fixtures/reference/selective_scan.safetensors), with and without an initial state and a
# dlast; each backward runs twice, the second time with its blocks in the opposite order, and
# must repeat every gradient bit for bit (the deterministic backward). It checks the kernels'
# logic (indexing, lanes, windows, barriers, the adjoint's algebra, the partials' layout), not
# their speed or the GPU's memory model. Takes ~1 min on 2 cores. Optional argument: one case's
# index.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$root/kernels/tools/emu" \
  -DSCAN_CU="\"$root/kernels/cu/scan.cu\"" -o "$tmp/scan_emu" "$root/kernels/tools/emu/scan_emu.cpp"
"$tmp/scan_emu" "$root/tests/fixtures/reference/selective_scan.safetensors" "$@"
