#!/usr/bin/env bash
# Mamba-2 through the CLI on the lent GPU (stage/ carried): 20 training steps of a small
# Mamba-2 on the CPU and on the GPU from the same seed and data (losses must agree to 1e-3
# relative, as gpu-check's Mamba-1 training check), then the default-size Mamba-1 and Mamba-2
# byte LMs for 300 steps each on the GPU (tokens/s, val_bpb), then --device cuda with no GPU.
set -uo pipefail
m=stage/mamba
d=$(mktemp -d)
small=(--layer mamba2 --d-model 64 --n-layer 2 --headdim 16 --d-state 16 --chunk-size 32 --batch 4 --seq-len 128
  --steps 20 --eval-every 10 --eval-windows 4 --sample-tokens 0 --quiet)
$m train --device cpu "${small[@]}" --out "$d/cpu" > /dev/null || exit 1
$m train --device cuda "${small[@]}" --out "$d/cuda" > /dev/null || exit 1
python3 - "$d/cpu/metrics.jsonl" "$d/cuda/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
la = [r["loss"] for r in a if "loss" in r]; lb = [r["loss"] for r in b if "loss" in r]
worst = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
print(f"mamba2 20 steps cpu vs cuda: worst relative loss difference {worst:.2e} over {len(la)} steps "
      f"(first {la[0]:.6f} vs {lb[0]:.6f}, last {la[-1]:.6f} vs {lb[-1]:.6f})")
sys.exit(0 if worst <= 1e-3 and len(la) == len(lb) == 20 else 1)
PY
ok=$?
for layer in mamba1 mamba2; do
  $m train --device cuda --layer $layer --steps 300 --eval-every 100 --sample-tokens 0 --quiet --out "$d/$layer" > /dev/null || ok=1
  python3 - "$d/$layer/metrics.jsonl" "$layer" <<'PY'
import json, sys, statistics as s
r = [json.loads(l) for l in open(sys.argv[1])]
t = [x["tokens_per_s"] for x in r if "tokens_per_s" in x][5:]
v = [f'{x["step"]}: {x["val_bpb"]:.3f}' for x in r if "val_bpb" in x]
print(f"{sys.argv[2]} default size, 300 steps on cuda: median {s.median(t):,.0f} tokens/s; val_bpb " + ", ".join(v))
PY
done
CUDA_VISIBLE_DEVICES= $m train --device cuda --steps 1 --out "$d/none" 2>&1 | tail -n 1
rm -rf "$d"
exit $ok
