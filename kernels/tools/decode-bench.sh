#!/usr/bin/env bash
# Token generation speed, ours and the reference's, in one device call (docs/PERF.md,
# "Generation"). Ours: `mamba generate --timing` on checkpoints made here by one training
# step (the default model and d_model 768 x 24, Mamba-1; and Mamba-2 at both sizes), greedy,
# per decoder path and batch size.
# The reference: kernels/tools/gen_ref.py (MambaLMHeadModel.generate, random weights) at the
# same sizes. There, from the repo root, with carry ["stage", "ref"]:
#   bash kernels/tools/decode-bench.sh [ours|ref|all|ncu]
# (all: ours while the reference's extensions build, then the reference, in one call)
# ncu: after `ours`, Nsight Compute's duration and DRAM throughput of each fused kernel of one
# token of the d_model 768 x 24 model (kernels launched one by one, --decoder fused).
set -euo pipefail
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
what="${1:-all}"
m=stage/mamba
prompt="The quick brown fox "  # 20 bytes
ours() {
  local name=$1 decoders=$2 dec b; shift 2
  "$m" train --device cuda --quiet --overwrite --steps 1 --eval-windows 1 --sample-tokens 8 \
    --out "/tmp/dec-$name" "$@" > /dev/null
  for dec in $decoders; do
    for b in 1 8 64 256; do
      case "$dec" in token*) [ "$b" -le 8 ] || continue ;; esac  # the one-kernel token: batch <= 8
      [ "$dec" = fused ] && [ "$b" != 1 ] && continue
      [ "$dec" = generic ] && [ "$b" = 8 ] && continue
      printf '%s d=%s batch %s: ' "$name" "$dec" "$b" | tee -a "$out/decode.txt"
      "$m" generate --device cuda --checkpoint "/tmp/dec-$name/checkpoint" --prompt "$prompt" --tokens 512 \
        --temperature 0 --batch "$b" --decoder "$dec" --timing 2>&1 >/dev/null | tee -a "$out/decode.txt"
    done
  done
}
if [ "$what" = ncu ]; then
  [ -d /tmp/dec-big/checkpoint ] || "$m" train --device cuda --quiet --overwrite --steps 1 --eval-windows 1 \
    --sample-tokens 8 --out /tmp/dec-big --d-model 768 --n-layer 24 --batch 1 --seq-len 64 > /dev/null
  ncu --clock-control none -k regex:decode_ --launch-skip 80 --launch-count 8 --log-file "$out/decode-ncu.txt" \
    --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active \
    "$m" generate --device cuda --checkpoint /tmp/dec-big/checkpoint --prompt "$prompt" --tokens 8 --temperature 0 \
    --decoder fused > /dev/null
  grep -E "decode_|duration|throughput|bytes|grid_size|warps_active" "$out/decode-ncu.txt"
  exit 0
fi
# all: the reference's CUDA extensions (causal_conv1d_update in its step, the CUDA scan in its
# prefill) build in the background while ours run, so that both sides come from one call.
ref_build=ref-build  # (a global `b` was the batch loop's too: the DONE check looked in 256/)
if [ "$what" = all ] && [ ! -f $ref_build/DONE ] && ! bash kernels/tools/ref-setup.sh running; then
  nohup bash kernels/tools/ref-setup.sh build > "$out/ref-build.txt" 2>&1 &
fi
if [ "$what" != ref ]; then
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$out/decode.txt"
  all_decoders="token token-bf16 graph fused generic"
  ours default "$all_decoders" --batch 2 --seq-len 64
  ours big "$all_decoders" --d-model 768 --n-layer 24 --batch 1 --seq-len 64
  # Mamba-2 (the reference's defaults: d_state 128, headdim 64): no one-kernel token
  ours default2 "graph fused generic" --layer mamba2 --batch 2 --seq-len 64
  ours big2 "graph fused generic" --layer mamba2 --d-model 768 --n-layer 24 --batch 1 --seq-len 64
fi
if [ "$what" != ours ]; then
  for _ in $(seq "${REF_WAIT:-480}"); do  # while a build runs, at most REF_WAIT seconds
    bash kernels/tools/ref-setup.sh running || break
    sleep 1
  done
  if [ -f $ref_build/DONE ]; then cat $ref_build/DONE; else echo "extensions not built: the reference's step runs torch ops"; fi \
    | tee -a "$out/decode-ref.txt"
  python3 kernels/tools/gen_ref.py --d-model 128 --n-layer 4 --batch 1,8,64,256 --tokens 512 --prompt 20 \
    --reps 3 --fused-add-norm 2>&1 | tee -a "$out/decode-ref.txt"
  python3 kernels/tools/gen_ref.py --d-model 768 --n-layer 24 --batch 1,8,64,256 --tokens 512 --prompt 20 \
    --reps 3 --fused-add-norm 2>&1 | tee -a "$out/decode-ref.txt"
  # Mamba-2 at d_model 768 only: at 128 (4 heads) in_proj has 772 outputs a token, and
  # causal-conv1d's channel-last kernel, which the reference's prefill calls on a slice of them,
  # needs that stride to be a multiple of 8 (a RuntimeError, seen on the H200 in session 15)
  python3 kernels/tools/gen_ref.py --layer Mamba2 --d-model 768 --n-layer 24 --batch 1,8,64,256 --tokens 512 \
    --prompt 20 --reps 3 --fused-add-norm 2>&1 | tee -a "$out/decode-ref.txt"
fi
