#!/usr/bin/env bash
# Build here, run on the lent GPU machine (which has the driver, compute-sanitizer and ncu
# but no Rust). Two verbs:
#   bash kernels/tools/gpu.sh stage   # here: build the GPU binaries, copy them into stage/
#   bash kernels/tools/gpu.sh run     # there (the device tool's command, with carry ["stage"])
# docs/GPU.md has the details.
set -euo pipefail
case "${1:-}" in
  stage)
    cd "$(dirname "$0")/../.."
    source <(bash kernels/tools/setup-cuda.sh)
    cargo build --release -p mamba-tests --features cuda --bin gpu-check
    rm -rf stage && mkdir -p stage
    cp target/release/gpu-check stage/
    strip stage/gpu-check
    cp kernels/tools/gpu.sh stage/
    ls -la stage
    ;;
  run)
    # from the repository root (where the device tool starts), with stage/ carried
    out="${OUT:-/tmp/gpu-out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
    echo "== gpu-check"
    stage/gpu-check | tee "$out/gpu-check.txt"
    echo "== cuBLAS reference (torch)"
    python3 kernels/tools/cublas_ref.py | tee "$out/cublas.txt"
    echo "== compute-sanitizer memcheck (no timing)"
    GPU_CHECK_NO_TIMING=1 compute-sanitizer --tool memcheck --error-exitcode 3 stage/gpu-check > "$out/memcheck.txt" 2>&1 \
      && tail -n 3 "$out/memcheck.txt" || { tail -n 30 "$out/memcheck.txt"; exit 3; }
    ;;
  *)
    echo "usage: $0 stage|run" >&2
    exit 2
    ;;
esac
