#!/usr/bin/env bash
# Assemble every kernel for sm_90 with ptxas and print its registers, stack and spills.
# Fails if a kernel spills (a spill nobody meant is a bug). Needs setup-cuda.sh's nvcc.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.cuda/pip/nvidia/cu13/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The op-code header that build.rs generates into OUT_DIR (from kernels/src/codes.rs).
(cd "$root" && cargo run --quiet -p mamba-kernels --example codes_header) > "$tmp/codes.cuh"
status=0
for cu in "$root"/kernels/cu/*.cu; do
  name=$(basename "$cu" .cu)
  "$bin/nvcc" -arch=sm_90 --ptx -O3 -I "$tmp" -o "$tmp/$name.ptx" "$cu"
  report=$("$bin/ptxas" -arch=sm_90 -v -o /dev/null "$tmp/$name.ptx" 2>&1)
  echo "$report" | awk -v f="$name" '
    /Compiling entry function/ { k = $7; gsub(/[\047]/, "", k) }
    /spill stores/ { stack = $1; spill = $5 + $9 }
    /Used [0-9]+ registers/ { printf "%-14s %-16s %3s registers  %3s B stack  %3s B spilled\n", f, k, $5, stack, spill }'
  if echo "$report" | grep -qE '[1-9][0-9]* bytes spill (stores|loads)'; then
    echo "error: $name spills registers" >&2
    status=1
  fi
done
exit $status
