#!/usr/bin/env bash
# Real NVIDIA checks on the `device` machine (see docs/PERFORMANCE.md):
#  1. build llama.cpp mainline with CUDA and RPC from the carried source (.dev/llama-src.tgz),
#  2. compare the sampler's NVML readings with nvidia-smi (bench/nvidia_check.py),
#  3. `rpctui run` with two CUDA rpc-servers on the GPU, sampled, and `rpctui check`.
# Needs .dev/ carried: llama-src.tgz, whl/ (tomlkit, gguf), cache/ (the llama vocab).
set -euo pipefail
source bench/device_build.sh
python3 bench/nvidia_check.py 10 2>&1 | tee -a "$out/summary.txt"
cuda_profile /tmp/cuda.toml cuda-two-servers builtin:tiny 2
python3 -m rpctui.cli check /tmp/cuda.toml 2>&1 | tee -a "$out/summary.txt"
python3 -m rpctui.cli run /tmp/cuda.toml 2>&1 | tee -a "$out/summary.txt"
cp /tmp/data/rpctui/runs/*.jsonl "$out/" 2>/dev/null || true
