#!/usr/bin/env bash
# Mamba vs its family at equal active parameters and equal tokens on the lent GPU (issue 14,
# docs/FAMILY.md). Build here with `bash kernels/tools/gpu.sh stage`; run there from the
# repository root with carry ["stage"]:
#
#   bash kernels/tools/family.sh train [ARM-SEED..]   # default: mamba, moe and hybrid x $SEEDS
#         mamba-S   Mamba blocks, each with a dense gated MLP (an MoE branch of 1 expert)
#         moe-S     MoE-Mamba: the same blocks with a Switch MoE branch ($EXPERTS experts, top 1)
#         hybrid-S  mamba-S with attention at layer 4 of 8 (--attn-every 8, as Jamba's 1 in 8)
#         plain-S   (optional) vanilla Mamba: 2 x N_LAYER blocks without MLPs, about the same
#                   active parameters when --d-expert makes an expert about a Mamba mixer
#   then, here: cargo run --release -p mamba-train --example family_charts -- DIR
#
# Every run sees the same bytes: batch x seq-len x steps, the same data stream for one seed
# (the data order depends on the seed alone, not on the model), and is evaluated on the same
# validation windows every EVAL_EVERY steps. Runs go to /tmp/family/NAME,
# all at once on the one GPU, until they finish or DEADLINE seconds pass (default 540). A run
# whose folder holds a checkpoint (an earlier call on the still warm machine) resumes from it,
# and a finished one (NAME/done) is kept as it is. This call's runs come back as
# $OUT/family.tar.gz: metrics, logs, configs and wall times (NAME/time.txt, a line per call),
# not the checkpoints (at this size they exceed the 16 MiB a returned file may have); unpack
# it and give its folder to the example. A stage/family.tar.gz from an earlier call is
# unpacked first: its finished runs are kept, the others start again.
#
# The data: TEXT=pystdlib (default) is the .py files of the machine's Python standard library
# (outside site-packages, in byte order of their paths), built into /tmp/family/corpus.txt: on
# the H200, Python 3.12.3's /usr/lib/python3.12, 10,670,259 bytes, sha256 08e8b81c3bb2..., of
# which a run of 800 steps x 8192 bytes sees 6.6M once at most. The embedded corpus (this
# repository, about 1.2 MB) would be seen 5 times, and MoE-Mamba's 4x parameters could learn
# it by heart. TEXT=embedded trains on the embedded corpus (the one of the staged binary's
# build); TEXT=FILE on FILE. Its size and sha256 go to $OUT/corpus.txt.
#
# The sizes are variables: D_MODEL N_LAYER D_EXPERT EXPERTS BATCH SEQ_LEN STEPS EVAL_EVERY
# EVAL_WINDOWS CHECKPOINT_EVERY LR WARMUP SEEDS, and MAMBA (the binary), DEVICE, DEADLINE.
# Measured on the H200 at the defaults (binary of ae63ba2): alone, a Mamba or hybrid run trains
# about 175k bytes/s (47 ms a step), MoE-Mamba about 42k (197 ms: every expert runs over every
# token, moe.rs; with EXPERTS=4 about 74k); runs at once share the GPU at about 95% of the sum
# of their speeds. From those, one seed (the default) should take about 4.5 minutes and
# SEEDS="1 2" about 8.5 (DEADLINE=570 in a call of 600 s); not yet timed end to end.
set -uo pipefail
[ "${1:-}" = train ] || { sed -n '2,39p' "$0"; exit 2; }
out="${OUT:-/tmp/out}"
root=/tmp/family
mkdir -p "$out" "$root"
M="${MAMBA:-stage/mamba}"
device="${DEVICE:-cuda}"
deadline="${DEADLINE:-540}"
t0=$(date +%s)

D_MODEL="${D_MODEL:-256}"
N_LAYER="${N_LAYER:-8}"
D_EXPERT="${D_EXPERT:-512}"
EXPERTS="${EXPERTS:-8}"
BATCH="${BATCH:-32}"
SEQ_LEN="${SEQ_LEN:-256}"
STEPS="${STEPS:-800}"
EVAL_EVERY="${EVAL_EVERY:-50}"
EVAL_WINDOWS="${EVAL_WINDOWS:-128}"
CHECKPOINT_EVERY="${CHECKPOINT_EVERY:-200}"
LR="${LR:-2e-3}"
WARMUP="${WARMUP:-50}"
SEEDS="${SEEDS:-1}"
TEXT="${TEXT:-pystdlib}"

# The data flag (and $OUT/corpus.txt: what the runs trained on).
case "$TEXT" in
  embedded)
    data=()
    echo "embedded corpus of $M ($(sha256sum "$M" | cut -c1-16)...)" > "$out/corpus.txt"
    ;;
  pystdlib)
    corpus="$root/corpus.txt"
    if [ ! -s "$corpus" ] || [ ! -s "$root/corpus-source.txt" ]; then
      lib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
      find "$lib" -name '*.py' -not -path '*/site-packages/*' -print0 | LC_ALL=C sort -z \
        | xargs -0 cat > "$corpus"
      echo "$(python3 -V) stdlib at $lib" > "$root/corpus-source.txt"
    fi
    data=(--text "$corpus")
    { cat "$root/corpus-source.txt"; echo "$(wc -c < "$corpus") bytes, sha256 $(sha256sum "$corpus" | cut -d' ' -f1)"; } \
      > "$out/corpus.txt"
    ;;
  *)
    data=(--text "$TEXT")
    echo "$TEXT: $(wc -c < "$TEXT") bytes, sha256 $(sha256sum "$TEXT" | cut -d' ' -f1)" > "$out/corpus.txt"
    ;;
esac
cat "$out/corpus.txt"

# The same schedule, data and evaluation for every arm; no samples (they would cost time).
COMMON=(--d-model "$D_MODEL" --batch "$BATCH" --seq-len "$SEQ_LEN" --steps "$STEPS" --lr "$LR" --warmup "$WARMUP"
  --eval-every "$EVAL_EVERY" --eval-windows "$EVAL_WINDOWS" --checkpoint-every "$CHECKPOINT_EVERY" --sample-tokens 0
  "${data[@]}")
# A dense gated MLP after every mixer: the MoE branch with one expert is exactly that (its gate
# is softmax over one logit = 1, its capacity 1.25 x the tokens drops none, its balancing loss
# is a constant 0.01 a layer with no gradient), so that the MoE arm differs in the experts alone.
DENSE=(--n-layer "$N_LAYER" --moe-every 1 --experts 1 --top-k 1 --d-expert "$D_EXPERT")

[ -f stage/family.tar.gz ] && tar -xzf stage/family.tar.gz -C "$root"

# train NAME FLAGS..: a fresh run, or the resumption of /tmp/family/NAME, in the background,
# stopped (SIGTERM, by timeout) when the deadline comes.
names=()
train() {
  local name="$1" dir="$root/$1"
  shift
  names+=("$name")
  if [ -f "$dir/done" ]; then
    echo "$name: finished earlier, kept"
    return
  elif [ -f "$dir/checkpoint/model.safetensors" ]; then
    set -- --resume "$dir/checkpoint"
  else
    rm -rf "$dir" # a fresh start: nothing of an earlier try remains
    set -- "$@" --out "$dir"
  fi
  mkdir -p "$dir"
  local left=$((deadline - ($(date +%s) - t0)))
  echo "$name: $M train $*" >> "$dir/log.txt"
  ( /usr/bin/time -f "%e s" -a -o "$dir/time.txt" \
      timeout "$left" "$M" train --device "$device" "$@" >> "$dir/log.txt" 2>&1 && touch "$dir/done" ) &
}

shift
specs=("$@")
if [ ${#specs[@]} -eq 0 ]; then
  for seed in $SEEDS; do specs+=("mamba-$seed" "moe-$seed" "hybrid-$seed"); done
fi
for spec in "${specs[@]}"; do
  seed="${spec##*-}"
  case "$spec" in
    mamba-*) train "$spec" "${COMMON[@]}" "${DENSE[@]}" --seed "$seed" ;;
    moe-*) train "$spec" "${COMMON[@]}" --n-layer "$N_LAYER" --moe-every 1 --experts "$EXPERTS" --top-k 1 \
      --d-expert "$D_EXPERT" --seed "$seed" ;;
    hybrid-*) train "$spec" "${COMMON[@]}" "${DENSE[@]}" --attn-every 8 --seed "$seed" ;;
    plain-*) train "$spec" "${COMMON[@]}" --n-layer $((2 * N_LAYER)) --seed "$seed" ;;
    *) echo "unknown run $spec" >&2; exit 2 ;;
  esac
done
wait
for name in "${names[@]}"; do
  # the model's config (for the parameter counts) outside the checkpoints, which stay here
  [ -f "$root/$name/checkpoint/config.json" ] && cp "$root/$name/checkpoint/config.json" "$root/$name/config.json"
  python3 - "$root/$name" <<'EOF'
import json, os, sys
d = sys.argv[1]
try:
    rows = [json.loads(l) for l in open(d + "/metrics.jsonl")]
except OSError:
    log = open(d + "/log.txt").read().strip().splitlines() if os.path.exists(d + "/log.txt") else []
    sys.exit(print(f"{d.split('/')[-1]:12} failed   {log[-1] if log else 'no log'}"))
val = [(r["step"], r["val_bpb"]) for r in rows if "val_bpb" in r]
tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
state = "done" if os.path.exists(d + "/done") else "stopped"
last = f"step {val[-1][0]} val_bpb {val[-1][1]:.4f} best {min(v for _, v in val):.4f}" if val else "no evaluation"
speed = f"{sorted(tps)[len(tps) // 2]:,.0f} tok/s (median)" if tps else ""
try:
    wall = sum(float(l.split()[0]) for l in open(d + "/time.txt") if l.strip().endswith(" s"))
except OSError:
    wall = float("nan")
print(f"{d.split('/')[-1]:12} {state:8} {last} {speed}, {wall:.0f} s wall")
EOF
done | sort | tee "$out/summary.txt"
tar -czf "$out/family.tar.gz" -C "$root" --exclude='checkpoint*' "${names[@]}"
