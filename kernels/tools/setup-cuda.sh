#!/usr/bin/env bash
# Prepare a machine without CUDA to build the `cuda` feature:
#  1. the CUDA 13.0 compiler from PyPI wheels, pinned (13.0 emits PTX ISA 9.0, which the
#     H100's driver 580 loads; newer wheels emit ISA 9.5, which it rejects), installed
#     into the project-local, git-ignored .cuda/pip;
#  2. a link stub .cuda/stub/lib64/libcuda.so (soname libcuda.so.1) defining every cu*
#     function that cust_raw declares, so binaries link here and bind to the real driver
#     on the GPU machine; beside it libcuda.so.1, so that a test binary that never calls
#     the driver (the kernels crate's own tests: the PTX's entries) also runs here.
# Prints the environment to export; `source <(bash kernels/tools/setup-cuda.sh)` applies it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dest="$root/.cuda"
nvcc="$dest/pip/nvidia/cu13/bin/nvcc"

if [ ! -x "$nvcc" ]; then
  echo "installing nvcc 13.0 into $dest/pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest/pip" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 >&2
fi

stub="$dest/stub/lib64/libcuda.so"
if [ ! -f "$stub" ]; then
  (cd "$root" && cargo fetch --quiet >&2)
  bindings=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*cust_raw-0.11.3/src/cuda.rs' | head -n 1)
  if [ -z "$bindings" ]; then
    echo "cannot find cust_raw 0.11.3's bindings in the cargo registry" >&2
    exit 1
  fi
  mkdir -p "$dest/stub/lib64"
  # Every function returns CUDA_ERROR_UNKNOWN (999): the stub only satisfies the linker.
  grep -oE 'pub fn cu[A-Za-z0-9_]+' "$bindings" | sort -u | awk '{print "int " $3 "(void) { return 999; }"}' > "$dest/stub/libcuda.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$dest/stub/libcuda.c"
  echo "link stub: $(wc -l < "$dest/stub/libcuda.c") functions" >&2
fi

[ -e "$dest/stub/lib64/libcuda.so.1" ] || ln -s libcuda.so "$dest/stub/lib64/libcuda.so.1"

echo "export CUDA_LIBRARY_PATH=$dest/stub NVCC=$nvcc"
