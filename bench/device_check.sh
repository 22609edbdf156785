#!/usr/bin/env bash
# Real NVIDIA checks on the `device` machine (see docs/PERFORMANCE.md):
#  1. build llama.cpp mainline with CUDA and RPC from the carried source (.dev/llama-src.tgz),
#  2. compare the sampler's NVML readings with nvidia-smi (bench/nvidia_check.py),
#  3. `rpctui run` with two CUDA rpc-servers on the GPU, sampled, and `rpctui check`.
# Needs .dev/ carried: llama-src.tgz, whl/ (tomlkit, gguf), cache/ (the llama vocab).
set -euo pipefail
out="${OUT:-/tmp/out}"; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .dev/whl/*.whl
mkdir -p /tmp/xdg/rpctui/src && cp -r .dev/cache/src/x /tmp/xdg/rpctui/src/
export PYTHONPATH="/tmp/site:$PWD" XDG_CACHE_HOME=/tmp/xdg XDG_DATA_HOME=/tmp/data
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
mkdir -p /tmp/src && tar xzf .dev/llama-src.tgz -C /tmp/src
start=$(date +%s)
cmake -S /tmp/src/llama.cpp -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_RPC=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_NUMBER=11312 -DLLAMA_BUILD_COMMIT=0c1e570 > "$out/cmake.log" 2>&1
cmake --build /tmp/build -j"$(nproc)" --target ggml-rpc-server llama-bench > "$out/build.log" 2>&1
echo "CUDA build: $(( $(date +%s) - start )) s" | tee "$out/summary.txt"
python3 bench/nvidia_check.py 10 2>&1 | tee -a "$out/summary.txt"
cat > /tmp/cuda.toml <<TOML
name = "cuda-two-servers"
sample_interval_s = 0.5
[[nodes]]
name = "gpu"
host = "local"
bin_dir = "/tmp/build/bin"
[[nodes.servers]]
port = 50052
devices = ["CUDA0"]
[[nodes.servers]]
port = 50053
devices = ["CUDA0"]
[job]
model = "builtin:tiny"
ngl = 99
prompt_tokens = [512]
gen_tokens = [128]
repetitions = 5
TOML
python3 -m rpctui.cli check /tmp/cuda.toml 2>&1 | tee -a "$out/summary.txt"
python3 -m rpctui.cli run /tmp/cuda.toml 2>&1 | tee -a "$out/summary.txt"
cp /tmp/data/rpctui/runs/*.jsonl "$out/" 2>/dev/null || true
