#!/usr/bin/env bash
# `rpctui build mainline --backend cuda` on the machine rpctui runs on (the `device` machine),
# then `rpctui run` of a local node with `build = "mainline"`, `backend = "cuda"`: the build is
# for this machine's GPUs (nvidia-smi's compute capability, -DCMAKE_CUDA_ARCHITECTURES), and
# the run finds that same build. Carry .dev2 (see bench/device_node_build.sh).
#     bash bench/device_local_cuda.sh
set -uo pipefail
source bench/device_dev2.sh
nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | tee "$out/gpu.txt"
t=$(date +%s)
python3 -m rpctui.cli.main build mainline --backend cuda 2>&1 | tail -2 | tee "$out/build.txt"
echo "local build: $(( $(date +%s) - t )) s" | tee -a "$out/build.txt"
grep -o '"-DCMAKE_CUDA_ARCHITECTURES=[^"]*"' /tmp/xdg/rpctui/llama/*/BUILD.json | tee -a "$out/build.txt"
model=$(python3 -c "from rpctui.llama.tinymodel import ensure_model; print(ensure_model('tiny'))")
cat > /tmp/local.toml <<TOML
name = "local-cuda"
[[nodes]]
name = "gpu"
host = "local"
main = true
build = "mainline"
backend = "cuda"
[[nodes.servers]]
port = 50052
bind = "127.0.0.1"
devices = ["CUDA0"]
[job]
model = "$model"
ngl = 99
prompt_tokens = [512]
gen_tokens = [32]
repetitions = 1
TOML
t=$(date +%s)
python3 -m rpctui.cli.main run /tmp/local.toml 2>&1 | tail -14 | tee "$out/run.txt"
echo "run (no second build): $(( $(date +%s) - t )) s" | tee -a "$out/run.txt"
