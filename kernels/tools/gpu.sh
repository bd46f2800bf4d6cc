#!/usr/bin/env bash
# Build here, run on the lent GPU machine (which has the driver, compute-sanitizer and ncu
# but no Rust). Verbs:
#   bash kernels/tools/gpu.sh stage   # here: build gpu-check and mamba (cuda), copy them into stage/
#   bash kernels/tools/gpu.sh run     # there (the device tool's command, with carry ["stage"]):
#                                     # gpu-check, cuBLAS reference, memcheck of gpu-check and of training
#   bash kernels/tools/gpu.sh train [flags]  # there: stage/mamba train --device cuda --profile [flags]
#   bash kernels/tools/gpu.sh speed TEXT [BIN..] # there: training throughput of each mamba binary
#                                     # (default stage/mamba) on TEXT: the default model and
#                                     # d_model 768 x 24 at batch 8 x 2048, median tokens/s
# docs/GPU.md has the details.
set -euo pipefail
case "${1:-}" in
  stage)
    cd "$(dirname "$0")/../.."
    source <(bash kernels/tools/setup-cuda.sh)
    cargo build --release -p mamba-tests --features cuda --bin gpu-check
    cargo build --release -p mamba-train --features cuda --bin mamba
    rm -rf stage && mkdir -p stage
    cp target/release/gpu-check target/release/mamba stage/
    strip stage/gpu-check stage/mamba
    cp kernels/tools/gpu.sh stage/
    # the embedded default corpus as a file, for the reference's runs on the same text (bf16-loss.sh ref)
    cp "$(ls -t target/release/build/mamba-train-*/out/corpus.txt | head -n 1)" stage/corpus.txt
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
    echo "== compute-sanitizer memcheck of 3 training steps (small model)"
    compute-sanitizer --tool memcheck --error-exitcode 3 stage/mamba train --device cuda --steps 3 --d-model 64 \
      --n-layer 2 --batch 2 --seq-len 64 --eval-windows 2 --sample-tokens 8 --quiet --overwrite --out /tmp/memcheck-run \
      > "$out/memcheck-train.txt" 2>&1 && tail -n 3 "$out/memcheck-train.txt" || { tail -n 30 "$out/memcheck-train.txt"; exit 3; }
    ;;
  train)
    # `mamba train` on the GPU with the kernel profile; extra flags pass through.
    shift
    out="${OUT:-/tmp/gpu-out}"
    mkdir -p "$out"
    stage/mamba train --device cuda --profile --overwrite --out "$out/run" "$@" 2>&1 | tee "$out/train.txt"
    ;;
  speed)
    # Same data (a fixed text, not the embedded corpus, which changes with the source), same
    # machine, binaries one after the other; tokens/s is the median over steps after the 5th.
    text="$2"; shift 2
    out="${OUT:-/tmp/gpu-out}"
    mkdir -p "$out"
    median() { python3 -c 'import json,sys,statistics as s; r=[json.loads(l) for l in open(sys.argv[1])]; t=[x["tokens_per_s"] for x in r if "tokens_per_s" in x][5:]; print(f"{s.median(t):,.0f} tokens/s over {len(t)} steps")' "$1"; }
    for bin in "${@:-stage/mamba}"; do
      tag=$(echo "$bin" | tr '/' '_')
      rm -rf "/tmp/speed-$tag-small" "/tmp/speed-$tag-big"
      "$bin" train --device cuda --text "$text" --quiet --out "/tmp/speed-$tag-small" > /dev/null
      echo "$bin default model (1000 steps, batch 16 x 128): $(median "/tmp/speed-$tag-small/metrics.jsonl")" | tee -a "$out/speed.txt"
      "$bin" train --device cuda --text "$text" --quiet --d-model 768 --n-layer 24 --batch 8 --seq-len 2048 \
        --steps 40 --eval-every 1000 --sample-tokens 0 --checkpoint-every 1000 --out "/tmp/speed-$tag-big" > /dev/null
      echo "$bin d_model 768 x 24, batch 8 x 2048 (40 steps): $(median "/tmp/speed-$tag-big/metrics.jsonl")" | tee -a "$out/speed.txt"
    done
    ;;
  *)
    echo "usage: $0 stage|run|train|speed [flags]" >&2
    exit 2
    ;;
esac
