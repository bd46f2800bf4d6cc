#!/usr/bin/env bash
# The `mamba` CLI's GPU paths, on the lent GPU machine (stage/ carried): a tiny run, eval and
# generate on cuda, the size check against the GPU's free memory, and what --device cuda says
# without a visible GPU. Prints each command's output; exits non-zero if one misbehaves.
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
check "no visible GPU" "cannot start the GPU" env CUDA_VISIBLE_DEVICES= $m train --device cuda "${tiny[@]}" --steps 1 --out "$d/none"
rm -rf "$d"
exit $fail
