#!/usr/bin/env bash
# The planner on real CUDA loads, on the `device` machine (see docs/PERFORMANCE.md):
#  1. build llama.cpp mainline with CUDA (bench/device_build.sh; carry .dev/),
#  2. bench/cuda_plan.py: planned vs allocated model, KV and compute buffers, five configs,
#  3. bench/compute_fit.py collect/check on CUDA0 servers: the compute rule's CUDA data.
# Everything lands in $OUT; each step is cut to fit one 10-minute call. `plan-only`: 1 and 2.
set -uo pipefail
t0=$(date +%s)
source bench/device_build.sh
export RPCTUI_BIN_DIR=/tmp/build/bin RPCTUI_DEVICE=CUDA0 RPCTUI_FLAVOURS=mainline
left() { echo $(( 570 - ($(date +%s) - t0) )); }
timeout 150 python3 bench/cuda_plan.py 2>&1 | tee "$out/cuda_plan.txt"
if [ "${1:-}" != "plan-only" ]; then
  timeout "$(left)" python3 bench/compute_fit.py collect "$out/compute_runs_cuda.json" 2>&1 | tee "$out/collect.txt"
  timeout "$(left)" python3 bench/compute_fit.py check 2>&1 | tee "$out/check.txt"
fi
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$out/summary.txt"
