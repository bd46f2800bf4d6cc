#!/usr/bin/env bash
# The `mamba` CLI's GPU paths, on the lent GPU machine (stage/ carried): a tiny run, eval and
# generate on cuda, a hybrid (jamba-tiny) and MoE-Mamba trained, stopped, resumed and sampled
# on cuda, the size check against the GPU's free memory, and what --device cuda says without
# a visible GPU. Prints each command's output; exits non-zero if one misbehaves.
set -uo pipefail
m=stage/mamba
d=$(mktemp -d)
fail=0
check() { # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  echo "== $name (exit $rc)"; echo "$out" | tail -n 3
  if ! grep -qF -- "$want" <<<"$out"; then echo "!! $name: expected '$want'"; fail=1; fi
}
tiny=(--d-model 16 --n-layer 1 --batch 2 --seq-len 16 --eval-windows 2 --sample-tokens 8)
check "train on cuda" "best val_bpb" $m train --device cuda "${tiny[@]}" --steps 4 --eval-every 2 --out "$d/run"
check "eval on cuda" "bits per byte" $m eval --device cuda --checkpoint "$d/run/checkpoint"
check "generate on cuda | head" "fn main" bash -c "$m generate --device cuda --checkpoint $d/run/checkpoint --tokens 100000000 | head -c 40"
check "too big for the GPU" "GPU memory is free" $m train --device cuda --batch 100000 --seq-len 100000 --out "$d/big"
check "task on cuda" "val_accuracy" $m train --device cuda --task induction-heads --steps 2 --eval-every 2 --out "$d/task"
# the family on the GPU: a hybrid with attention and MoE, and MoE-Mamba: train, stop, resume, generate
for preset in jamba-tiny moe-mamba-tiny; do
  fam=(--preset $preset --d-model 64 --n-layer 4 --batch 2 --seq-len 64 --eval-windows 2 --sample-tokens 8)
  check "$preset: 2 of 4 steps on cuda" "done: step 2" $m train --device cuda "${fam[@]}" --steps 4 --eval-every 2 --stop-after 2 --out "$d/$preset"
  check "$preset: resume on cuda" "done: step 4" $m train --device cuda --resume "$d/$preset/checkpoint"
  check "$preset: generate on cuda" "fn main" bash -c "$m generate --device cuda --checkpoint $d/$preset/checkpoint --tokens 64 | head -c 40"
done
check "no visible GPU" "cannot start the GPU" env CUDA_VISIBLE_DEVICES= $m train --device cuda "${tiny[@]}" --steps 1 --out "$d/none"
rm -rf "$d"
exit $fail
