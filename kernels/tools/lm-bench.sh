#!/usr/bin/env bash
# Our byte LM next to the reference's (kernels/tools/lm_ref.py) at one size: d_model 768 x 24
# layers, batch 8 x 2048, on the lent GPU from the repo root with stage/ and ref/ there (ref/
# from `ref-setup.sh here`):
#   bash kernels/tools/lm-bench.sh mamba1|mamba2
# Ours in six settings (fp32, its GEMMs on the tensor cores in 3xTF32; the same on the CUDA cores,
# MAMBA_F32_GEMM=cuda-cores; --tf32; --recompute; --precision bf16; bf16 and --recompute), the
# reference in fp32 and under bf16 autocast. Prints, and writes to $OUT: our median tokens/s over the steps after the
# 5th; our peak memory (the engine's ledger and allocator, which only --profile prints, so from
# a second, untimed 3-step run); the reference's numbers; and for every run the highest GPU
# memory nvidia-smi saw (one yardstick for both, CUDA context included). The reference's
# extensions (causal-conv1d, and for mamba1 the selective scan) are built in the background
# first unless ref-build has a DONE marker; ours run meanwhile.
set -uo pipefail
layer=${1:?usage: lm-bench.sh mamba1|mamba2}
case "$layer" in mamba1) ref_layer=Mamba1 ;; mamba2) ref_layer=Mamba2 ;; *) echo "unknown layer $layer" >&2; exit 2 ;; esac
out="${OUT:-/tmp/lm-out}/$layer"
mkdir -p "$out"
d=$(mktemp -d)
size=(--layer "$layer" --d-model 768 --n-layer 24 --batch 8 --seq-len 2048)
# the CLI always evaluates and checkpoints at the last step: keep that small (tokens/s counts steps only)
rare=(--eval-every 100000 --eval-windows 8 --sample-tokens 0 --checkpoint-every 100000 --overwrite)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"

# The build takes minutes of CPU: start it now (unless done or running), use it last.
b=ref-build
if [ ! -f $b/DONE ] && ! bash kernels/tools/ref-setup.sh running; then
  nohup bash kernels/tools/ref-setup.sh build > "$out/ref-build.txt" 2>&1 &
fi

# gpumem LOG CMD..: run CMD (output to LOG), then print the highest memory.used while it ran.
gpumem() {
  local log=$1 smi_log=$d/smi.$RANDOM; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$smi_log" &
  local smi=$!
  "$@" > "$log" 2>&1; local rc=$?
  kill $smi; wait $smi 2>/dev/null
  echo "nvidia-smi peak memory.used: $(sort -n "$smi_log" | tail -n 1) MiB (at start: $(head -n 1 "$smi_log") MiB)"
  return $rc
}

# ours NAME FLAGS..: the timed 25-step run and the 3-step --profile run for memory.
ours() {
  local name=$1; shift
  echo "== ours ($name): stage/mamba train --device cuda ${size[*]} $* --steps 25"
  [ -f $b/DONE ] || echo "(the reference's build shares the CPUs during this run)"
  gpumem "$d/speed.txt" stage/mamba train --device cuda "${size[@]}" "$@" --steps 25 "${rare[@]}" --out "$d/speed" \
    || { cat "$d/speed.txt"; return 1; }
  grep -E "^mamba:" "$d/speed.txt"
  python3 -c 'import json,sys,statistics as s; r=[json.loads(l) for l in open(sys.argv[1])]; t=[x["tokens_per_s"] for x in r if "tokens_per_s" in x][5:]; m=s.median(t); print(f"median {m:,.0f} tokens/s over {len(t)} steps (min {min(t):,.0f}, max {max(t):,.0f}), {8*2048/m*1e3:.1f} ms/step")' "$d/speed/metrics.jsonl"
  cp "$d/speed/metrics.jsonl" "$out/ours-$name-metrics.jsonl"
  echo "== ours ($name): peak memory from the ledger --profile prints (3 steps plus the final eval; not timed)"
  gpumem "$d/mem.txt" stage/mamba train --device cuda "${size[@]}" "$@" --steps 3 "${rare[@]}" --profile --out "$d/mem" \
    || { tail -n 30 "$d/mem.txt"; return 1; }
  grep -E "^  cuda: current|cuda allocator:" "$d/mem.txt"
  cp "$d/mem.txt" "$out/ours-$name-profile.txt"
}

{
  ours fp32 && MAMBA_F32_GEMM=cuda-cores ours fp32-cuda-cores && ours tf32 --tf32 && ours recompute --recompute \
    && ours bf16 --precision bf16 && ours bf16-recompute --precision bf16 --recompute
} 2>&1 | tee "$out/ours.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1

echo "== reference: waiting for the extensions' build (at most ${REF_WAIT:-480} s)"
for _ in $(seq "${REF_WAIT:-480}"); do bash kernels/tools/ref-setup.sh running || break; sleep 1; done
cat $b/DONE $b/FAILED 2>/dev/null || [ -f $b/DONE ] || echo "no DONE marker: lm_ref.py will find no extensions"
{
  rc=0
  for dtype in fp32 bf16; do
    flags=(--layer "$ref_layer"); [ $dtype = bf16 ] && flags+=(--bf16)
    echo "== reference: python3 kernels/tools/lm_ref.py ${flags[*]} (same size)"
    gpumem "$d/ref.txt" python3 kernels/tools/lm_ref.py "${flags[@]}"; r=$?
    cat "$d/ref.txt"
    if [ $r = 2 ]; then  # no causal-conv1d: measure the fallback rather than nothing, labelled so
      echo "== reference WITHOUT causal-conv1d (--allow-no-cc1d)"
      gpumem "$d/ref.txt" python3 kernels/tools/lm_ref.py "${flags[@]}" --allow-no-cc1d; r=$?
      cat "$d/ref.txt"
    fi
    [ $r = 0 ] || rc=$r
  done
  exit $rc
} 2>&1 | tee "$out/ref.txt"
rc=${PIPESTATUS[0]}
rm -rf "$d"
exit "$rc"
