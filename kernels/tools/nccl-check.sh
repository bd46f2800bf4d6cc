#!/usr/bin/env bash
# `mamba train --gpus` on a machine with one GPU (the device tool's command, with carry
# ["stage"] built by `bash kernels/tools/gpu.sh stage`; docs/TRAINING.md, "Several GPUs"):
#   1. where NCCL is: the version mamba loads, and where pip's nvidia.nccl says it is;
#   2. 20 steps of a small model with --gpus 1 (NCCL, one rank: the all-reduce is an
#      identity, the whole reduction path runs) and without --gpus: the losses of every step
#      and the final weights must agree to float tolerance;
#   3. the refusals: --gpus 2 on one GPU; then the launch itself with MAMBA_RANK_DEVICES=0,0
#      (rank 1 started on rank 0's GPU): the ranks start and meet, and NCCL refuses two ranks
#      on one GPU, which must end both with an error, not a hang;
#   4. with --speed: tokens/s at d_model 768 x 24 (batch 8 x 2048), --gpus 1 against none:
#      the cost of the reduction path on one GPU.
# Logs and both runs land in $OUT (default /tmp/nccl-check). Exits non-zero if a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/nccl-check}"
bin="${MAMBA:-stage/mamba}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 # NVLink multicast off in every NCCL run
fail=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
py_lib=$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)
echo "pip's nvidia.nccl: ${py_lib:-not importable}"

small=(--device cuda --steps 20 --warmup 3 --d-model 64 --n-layer 2 --batch 8 --seq-len 128 --eval-every 10
  --eval-windows 4 --sample-tokens 0 --checkpoint-every 1000 --overwrite)
train() { # name, flags...: a run into $out/name, its output in $out/name.txt
  local name=$1
  shift
  "$bin" train "$@" --out "$out/$name" > "$out/$name.txt" 2>&1
}

echo "== 20 steps without --gpus"
train plain "${small[@]}" || { tail -n 20 "$out/plain.txt"; exit 1; }
echo "== 20 steps with --gpus 1"
if ! train gpus1 "${small[@]}" --gpus 1; then
  tail -n 5 "$out/gpus1.txt"
  if [ -z "${MAMBA_NCCL_LIB:-}" ] && [ -n "$py_lib" ] && [ -f "$py_lib" ]; then
    echo "FAIL: mamba's own search did not find NCCL; again with MAMBA_NCCL_LIB=$py_lib"
    fail=1
    export MAMBA_NCCL_LIB="$py_lib"
    train gpus1 "${small[@]}" --gpus 1 || { tail -n 20 "$out/gpus1.txt"; exit 1; }
  else
    exit 1
  fi
fi
grep -E "^nccl " "$out/gpus1.txt" || { echo "FAIL: no NCCL line in the --gpus 1 output"; fail=1; }

echo "== compare: every step's loss and the final weights"
python3 - "$out/plain" "$out/gpus1" <<'EOF' || fail=1
import json, math, struct, sys

def losses(run):
    return [r["loss"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "loss" in r]

def weights(run):
    with open(f"{run}/checkpoint/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header, data = json.loads(f.read(n)), f.read()
    out = []
    for name in sorted(k for k in header if k != "__metadata__"):
        (b, e), dtype = header[name]["data_offsets"], header[name]["dtype"]
        assert dtype == "F32", (name, dtype)
        out.extend(struct.unpack(f"<{(e - b) // 4}f", data[b:e]))
    return out

a, b = sys.argv[1:3]
la, lb = losses(a), losses(b)
wa, wb = weights(a), weights(b)
worst = max((abs(x - y) / abs(x) for x, y in zip(la, lb)), default=math.inf)
rel = math.sqrt(sum((x - y) ** 2 for x, y in zip(wa, wb))) / math.sqrt(sum(x * x for x in wa))
same = la == lb and wa == wb
print(f"steps {len(la)} / {len(lb)}; final loss {la[-1]:.6f} / {lb[-1]:.6f}; worst loss difference {worst:.2e} "
      f"(relative); weights differ by {rel:.2e} (relative norm); bit for bit: {same}")
ok = len(la) == len(lb) == 20 and len(wa) == len(wb) and worst <= 1e-3 and rel <= 1e-4
print("ok" if ok else "FAIL: --gpus 1 does not train as one GPU does (tolerance: losses 1e-3, weights 1e-4)")
sys.exit(0 if ok else 1)
EOF

echo "== refusals: --gpus 2 on one GPU"
if train refuse "${small[@]}" --gpus 2; then
  echo "FAIL: --gpus 2 ran on a machine with one GPU"
  fail=1
else
  grep -E "^error: " "$out/refuse.txt"
fi
echo "== the launch: MAMBA_RANK_DEVICES=0,0 --gpus 2 (two ranks, one GPU; NCCL should refuse)"
start=$(date +%s)
set +e
MAMBA_RANK_DEVICES=0,0 NCCL_DEBUG=WARN timeout 300 "$bin" train "${small[@]}" --gpus 2 --out "$out/launch" > "$out/launch.txt" 2>&1
rc=$?
set -e
grep -E "^(error|nccl|mamba)|rank 1|Duplicate" "$out/launch.txt" | head -n 12
echo "exit status $rc after $(( $(date +%s) - start )) s"
case $rc in
  0) echo "NCCL let two ranks share a GPU: the two-process run went through to the end" ;;
  124) echo "FAIL: it hung (killed after 300 s)"; fail=1 ;;
  *) pgrep -f "$out/launch" > /dev/null && { echo "FAIL: a rank outlived rank 0"; fail=1; } || echo "ended with an error, no rank left behind" ;;
esac

if [ "${1:-}" = "--speed" ]; then
  big=(--device cuda --steps 20 --d-model 768 --n-layer 24 --batch 8 --seq-len 2048 --eval-every 1000
    --sample-tokens 0 --checkpoint-every 1000 --overwrite)
  median() { python3 -c 'import json,sys,statistics as s; t=[r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1])) if "tokens_per_s" in r][5:]; print(f"{s.median(t):,.0f} tokens/s (median of steps 6-{5+len(t)})")' "$1"; }
  echo "== speed at d_model 768 x 24, batch 8 x 2048"
  for run in big-plain big-gpus1; do
    flags=("${big[@]}")
    [ "$run" = big-gpus1 ] && flags+=(--gpus 1)
    if train "$run" "${flags[@]}"; then
      echo "$run: $(median "$out/$run/metrics.jsonl")" | tee -a "$out/speed.txt"
    else
      tail -n 5 "$out/$run.txt"
      fail=1
    fi
  done
fi
[ "$fail" = 0 ] && echo "nccl-check: all passed" || echo "nccl-check: FAILED"
exit "$fail"
