#!/usr/bin/env bash
# The per-token breakdown on a GPU (the `device` machine): two CUDA rpc-servers on one H200,
# then one alone,
# sampled with NVML, `breakdown = true`: its compute figures then come from the GPU's busy
# time as well as the servers' busiest thread. Needs .dev/ carried: llama-src.tgz, whl/
# (tomlkit), model.gguf (the generated tiny model).
set -euo pipefail
source bench/device_build.sh
cuda_profile /tmp/cuda-breakdown.toml cuda-breakdown "$PWD/.dev/model.gguf" 2 "breakdown = true"
python3 -m rpctui.cli run /tmp/cuda-breakdown.toml 2>&1 | tee -a "$out/summary.txt"
# One server alone on the node: its GPU's busy time is its own.
cuda_profile /tmp/cuda-one.toml cuda-one-server "$PWD/.dev/model.gguf" 1 "breakdown = true"
python3 -m rpctui.cli run /tmp/cuda-one.toml 2>&1 | tee -a "$out/summary.txt"
cp /tmp/data/rpctui/runs/*.jsonl "$out/" 2>/dev/null || true
