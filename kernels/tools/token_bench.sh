#!/usr/bin/env bash
# On the GPU machine, from the repo root: time cu/decode_token.cu's variants (token_bench.cu).
set -uo pipefail
nv=nvcc; command -v nvcc >/dev/null || nv=/usr/local/cuda/bin/nvcc
for v in "" "-DTOKEN_TRACE" "-DTOKEN_SKIP=7" "-DTOKEN_SKIP=7 -DTOKEN_SKIP_COPIES" "$@"; do
  $nv -arch=sm_90 -O3 -I kernels/cu $v -o /tmp/tb kernels/tools/token_bench.cu || continue
  echo "variant [$v]: $(/tmp/tb f32) | $(/tmp/tb bf16)"
done
