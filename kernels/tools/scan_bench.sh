#!/usr/bin/env bash
# On the GPU machine, from the repo root: time cu/scan.cu's kernels at the reference size with
# scan_bench.cu (nvcc, no cargo), then (with `ncu` as the first argument) Nsight Compute's
# speed-of-light, occupancy and warp-stall sections of one launch of each kernel, into
# $OUT/scan-ncu.txt. Further arguments are -D flags for the build (e.g. -DNAME=value).
set -uo pipefail
out="${OUT:-/tmp/gpu-out}"; mkdir -p "$out"
nv=nvcc; command -v nvcc >/dev/null || nv=/usr/local/cuda/bin/nvcc
prof=0; [ "${1:-}" = ncu ] && { prof=1; shift; }
$nv -arch=sm_90 -O3 -lineinfo -I kernels/cu "$@" -o /tmp/sb kernels/tools/scan_bench.cu || exit 1
/tmp/sb
/tmp/sb
if [ $prof = 1 ]; then
  ncu --clock-control none -k regex:selective_scan_ --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" /tmp/sb once > "$out/scan-ncu.txt" 2>&1
  grep -E "selective_scan_|Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Issued Warp|No Eligible|Active Warps|Eligible Warps|Block Limit" "$out/scan-ncu.txt"
  grep -E "selective_scan_|issue_stalled" "$out/scan-ncu.txt" | awk '/selective_scan_/ || $NF+0 > 0.05'
fi
