#!/usr/bin/env bash
# Sourced by the device scripts: set up Python paths and build llama.cpp mainline with CUDA
# (sm_90) and RPC from the carried source into /tmp/build/bin. Needs .dev/ carried:
# llama-src.tgz; for scripts that run rpctui there also whl/ (tomlkit, gguf), cache/ (the vocab).
out="${OUT:-/tmp/out}"; mkdir -p "$out"
if [ -d .dev/whl ]; then  # rpctui itself runs there: its wheels and the vocab's source
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .dev/whl/*.whl
  if [ -d .dev/cache/src/x ]; then mkdir -p /tmp/xdg/rpctui/src && cp -r .dev/cache/src/x /tmp/xdg/rpctui/src/; fi
fi
export PYTHONPATH="/tmp/site:$PWD" XDG_CACHE_HOME=/tmp/xdg XDG_DATA_HOME=/tmp/data PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
mkdir -p /tmp/src && tar xzf .dev/llama-src.tgz -C /tmp/src
start=$(date +%s)
cmake -S /tmp/src/llama.cpp -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_RPC=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_NUMBER=11312 -DLLAMA_BUILD_COMMIT=0c1e570 > "$out/cmake.log" 2>&1
cmake --build /tmp/build -j"$(nproc)" --target ggml-rpc-server llama-bench > "$out/build.log" 2>&1
echo "CUDA build: $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"

# cuda_profile FILE NAME MODEL SERVERS [TOP-LEVEL LINE]: a profile with SERVERS (1 or 2)
# `ggml-rpc-server -d CUDA0` on this machine and llama-bench -p 512 -n 128 -r 5 over them.
cuda_profile() {
  local file=$1 name=$2 model=$3 servers=$4 extra=${5:-}
  {
    printf 'name = "%s"\nsample_interval_s = 0.5\n%s\n' "$name" "$extra"
    printf '[[nodes]]\nname = "gpu"\nhost = "local"\nbin_dir = "/tmp/build/bin"\n'
    for port in $(seq 50052 $((50051 + servers))); do
      printf '[[nodes.servers]]\nport = %s\ndevices = ["CUDA0"]\n' "$port"
    done
    printf '[job]\nmodel = "%s"\nngl = 99\nprompt_tokens = [512]\ngen_tokens = [128]\nrepetitions = 5\n' "$model"
  } > "$file"
}
