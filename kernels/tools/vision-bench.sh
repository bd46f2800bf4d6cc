#!/usr/bin/env bash
# Vision Mamba's training speed on the GPU against a ViT of the same width in PyTorch, in one
# run (issue 15, docs/VISION.md). Build here with `bash kernels/tools/gpu.sh stage`; run there
# from the repository root with carry ["stage"]:
#
#   bash kernels/tools/vision-bench.sh [CIFAR.bin]
#
# CIFAR-like images (32 x 32 x 3, 10 classes, patches of 4): the CIFAR-10 batch given, or N
# random images in its format. For Mamba-1 and Mamba-2 blocks, `mamba vision train` for S
# steps (the median images/s of its metrics.jsonl after the first 5 steps), then
# kernels/tools/vit_ref.py at the same d_model and batch, then `mamba vision classify` of the
# Mamba-1 checkpoint on the GPU (its first lines). Settings by environment, with defaults:
#   D=192 (d_model)  L=12 (Vim blocks)  VIT_DEPTH=12  B=128 (batch)  S=40 (steps)
#   N=10000 (random images)  D_STATE=16  HEADDIM=32 (Mamba-2)  LAYERS="mamba1 mamba2"
#   MAMBA=stage/mamba  DEVICE=cuda  OUT=/tmp/out (where the text files go)
# On a machine without torch the ViT row says so and the rest still runs (e.g. a CPU smoke
# test: MAMBA=target/debug/mamba DEVICE=cpu D=32 L=2 B=8 S=7 N=300).
set -euo pipefail
out="${OUT:-/tmp/out}"
M="${MAMBA:-stage/mamba}"
device="${DEVICE:-cuda}"
D="${D:-192}" L="${L:-12}" VIT_DEPTH="${VIT_DEPTH:-12}" B="${B:-128}" S="${S:-40}" N="${N:-10000}"
D_STATE="${D_STATE:-16}" HEADDIM="${HEADDIM:-32}" LAYERS="${LAYERS:-mamba1 mamba2}"
mkdir -p "$out"
table="$out/vision-bench.txt"
: > "$table"

images="${1:-}"
if [ -z "$images" ]; then
  images="/tmp/vision-bench-random-$N.bin"
  # CIFAR-10's binary format: per image 1 label byte, then 1024 bytes each of R, G and B
  python3 - "$images" "$N" <<'EOF'
import random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1337)
with open(path, "wb") as f:
    for _ in range(n):
        f.write(bytes([rng.randrange(10)]) + rng.randbytes(3072))
EOF
  data="$N random images (CIFAR-10 format)"
else
  data="$images ($(( $(stat -c %s "$images") / 3073 )) images)"
fi
[ "$device" = cuda ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"

# median images/s after the first 5 steps of a metrics.jsonl, and the parameters of a checkpoint
stats() {
  python3 - "$1" <<'EOF'
import json, math, statistics, struct, sys
run = sys.argv[1]
rows = [json.loads(l) for l in open(run + "/metrics.jsonl")]
rates = [r["images_per_s"] for r in rows if "images_per_s" in r][5:]
with open(run + "/checkpoint/model.safetensors", "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
params = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
acc = [r["val_accuracy"] for r in rows if "val_accuracy" in r]
median = statistics.median(rates) if rates else float("nan")
print(f"{params:,} parameters, {median:,.0f} images/s (median of {len(rates)} steps after 5), "
      f"last loss {rows[-1]['loss']:.4f}, held-out accuracy {acc[-1] if acc else float('nan'):.4f}")
EOF
}

echo "data: $data; d_model $D, batch $B, $S steps, device $device" | tee -a "$table"
for layer in $LAYERS; do
  run="/tmp/vim-$layer"
  rm -rf "$run"
  t0=$(date +%s.%N)
  "$M" vision train --device "$device" --images "$images" --patch 4 --d-model "$D" --n-layer "$L" \
    --d-state "$D_STATE" --layer "$layer" --headdim "$HEADDIM" --batch "$B" --steps "$S" --eval-every "$S" \
    --quiet --overwrite --out "$run" > "$out/vim-$layer.txt" 2>&1 || { cat "$out/vim-$layer.txt"; exit 1; }
  wall=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
  echo "vim $layer d_model $D n_layer $L d_state $D_STATE: $(stats "$run"), $wall s in all" | tee -a "$table"
  cp "$run/metrics.jsonl" "$out/vim-$layer-metrics.jsonl"
done

if python3 -c "import torch" 2> /dev/null; then
  python3 kernels/tools/vit_ref.py --d-model "$D" --depth "$VIT_DEPTH" --batch "$B" --steps "$S" \
    > "$out/vit.txt" 2>&1 || { cat "$out/vit.txt"; exit 1; }
  tail -n 1 "$out/vit.txt" | tee -a "$table"
else
  echo "vit d_model $D depth $VIT_DEPTH: skipped (python3 has no torch here)" | tee -a "$table"
fi

first="${LAYERS%% *}"
echo "== mamba vision classify --device $device (the $first checkpoint; first lines)" | tee "$out/classify.txt"
"$M" vision classify --device "$device" --checkpoint "/tmp/vim-$first/checkpoint" "$images" > /tmp/vision-classify.txt
head -n 5 /tmp/vision-classify.txt | tee -a "$out/classify.txt"
echo "$(wc -l < /tmp/vision-classify.txt) images classified" | tee -a "$out/classify.txt"
echo "== table"
cat "$table"
