#!/usr/bin/env bash
# The Mamba paper's synthetic tasks on the lent GPU (issue 12, docs/PAPER.md). Build here with
# `bash kernels/tools/gpu.sh stage`; run there from the repository root with carry ["stage"]:
#
#   bash kernels/tools/paper.sh train table1-SEED.. induction-SEED..
#         table1-S: selective copying, the six arch x SSM rows, seed S
#         table1-ARCH-SSM-S: one of them (e.g. table1-no-gate-s4-2)
#         induction-S: induction heads trained at length 256, seed S
#   bash kernels/tools/paper.sh extrapolate NAME WINDOWS  # NAME's best checkpoint at lengths 2^6 .. 2^20
#
# Runs go to /tmp/paper/NAME, all at once on the one GPU, until they finish or DEADLINE
# seconds pass (default 540); each checkpoints every 500 steps, and a run whose folder is in
# stage/paper.tar.gz (from an earlier call) resumes there. This call's runs come back as
# $OUT/paper.tar.gz (metrics, checkpoints, logs, wall times).
set -uo pipefail
out="${OUT:-/tmp/out}"
mkdir -p "$out" /tmp/paper
M="${MAMBA:-stage/mamba}"
device="${DEVICE:-cuda}"
deadline="${DEADLINE:-540}"
t0=$(date +%s)
[ -f stage/paper.tar.gz ] && tar -xzf stage/paper.tar.gz -C /tmp/paper

# Table 1 (selective copying): the same setting for every row.
TABLE1="--task selective-copying --task-len 256 --task-tokens 16 --task-vocab 16 --d-model 64 --n-layer 2
  --batch 64 --lr ${LR:-2e-3} --weight-decay 0 --steps 6000 --eval-every 500 --checkpoint-every 500"
# LR=X: Table 1 runs at another learning rate, named ...-lrX (the investigation of docs/PAPER.md).
tag="${LR:+-lr$LR}"
# Induction heads at the paper's training length (256) and width (64).
INDUCTION="--task induction-heads --task-len 256 --task-vocab 16 --d-model 64 --n-layer 2
  --batch 64 --lr 1e-3 --weight-decay 0 --steps 4000 --eval-every 250 --checkpoint-every 250"

# train NAME FLAGS..: a fresh run, or the resumption of /tmp/paper/NAME, in the background.
names=()
train() {
  local name="$1" dir="/tmp/paper/$1"
  shift
  names+=("$name")
  if [ -f "$dir/checkpoint/model.safetensors" ]; then
    set -- --resume "$dir/checkpoint"
  else
    set -- "$@" --out "$dir"
  fi
  mkdir -p "$dir"
  ( /usr/bin/time -f "$name %e s" -a -o /tmp/paper/times.txt \
      $M train --device "$device" --quiet "$@" >> "$dir/log.txt" 2>&1 ) &
}

finish() {
  while [ $(( $(date +%s) - t0 )) -lt "$deadline" ] && [ -n "$(jobs -pr)" ]; do sleep 5; done
  local left
  left=$(jobs -pr)
  if [ -n "$left" ]; then
    echo "deadline: stopping $(echo $left | wc -w) runs (they resume from their checkpoints)"
    pkill -f -- "$M train"
    sleep 3
  fi
  for d in "${names[@]/#//tmp/paper/}"; do
    python3 - "$d" <<'EOF'
import json, sys
d = sys.argv[1]
try:
    rows = [json.loads(l) for l in open(d + "/metrics.jsonl")]
except OSError:
    sys.exit()
acc = [f'{r["step"]}:{r["val_accuracy"]:.3f}' for r in rows if "val_accuracy" in r]
print(d.split("/")[-1], " ".join(acc))
EOF
  done | sort | tee "$out/summary.txt"
  cat /tmp/paper/times.txt 2>/dev/null
  # the runs of this call, without the best checkpoint's optimizer state (not needed to
  # resume or evaluate; keeps the tar under the 16 MiB a returned file may have)
  tar -czf "$out/paper.tar.gz" -C /tmp/paper --exclude=checkpoint-best/training_state.safetensors times.txt "${names[@]}"
}

case "${1:-}" in
  train)
    shift
    for spec in "$@"; do
      seed="${spec##*-}"
      case "$spec" in
        table1-*-*-*)
          # one row: table1-ARCH-SSM-SEED
          row="${spec#table1-}"; row="${row%-*}"
          train "$spec$tag" $TABLE1 --arch "${row%-*}" --ssm "${row##*-}" --seed "$seed"
          ;;
        table1-*)
          for arch in no-gate h3 mamba; do
            for ssm in s4 s6; do
              train "table1-$arch-$ssm-$seed$tag" $TABLE1 --arch $arch --ssm $ssm --seed "$seed"
            done
          done
          ;;
        induction-*) train "induction-$seed" $INDUCTION --seed "$seed" ;;
        *) echo "unknown run $spec" >&2; exit 2 ;;
      esac
    done
    finish
    ;;
  extrapolate)
    # DIR WINDOWS: the checkpoint of /tmp/paper/DIR on WINDOWS x 4 examples per length.
    dir="/tmp/paper/$2"; windows="${3:-16}"
    for k in 6 8 10 12 14 16 18 20; do
      s=$(date +%s.%N)
      r=$($M eval --device "$device" --checkpoint "$dir/checkpoint-best" --windows "$windows" --task-len $((1 << k)) 2>&1)
      echo "$2 2^$k | $r | $(python3 -c "print(f'{$(date +%s.%N) - $s:.1f} s')")" | tee -a "$out/extrapolate.txt"
      [ $(( $(date +%s) - t0 )) -lt "$deadline" ] || { echo "deadline"; break; }
    done
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
