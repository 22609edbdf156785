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
