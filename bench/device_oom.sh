#!/usr/bin/env bash
# Capture real CUDA out-of-memory output on the `device` machine (tests/fixtures/cuda-oom-*):
# build mainline with CUDA and RPC from the carried source, hold all but a little of the GPU's
# memory with a PyTorch allocation, then load the model on the client's own CUDA0 and on a
# CUDA rpc-server. Needs .dev/ carried: llama-src.tgz and model.gguf (a generated tiny model).
set -uo pipefail
source bench/device_build.sh
bin=/tmp/build/bin
# Hold all but LEAVE MiB of the GPU; try smaller margins until the model's buffer no longer fits.
hold() {
  python3 -c "
import sys, time, torch
free, _ = torch.cuda.mem_get_info()
x = torch.empty(free - int(sys.argv[1]) * 2**20, dtype=torch.uint8, device='cuda')
print('held', x.numel() >> 20, 'MiB', flush=True)
time.sleep(600)" "$1" &
  holder=$!
  sleep 6
}
for leave in 700 600 520 460 420; do
  hold $leave
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader
  "$bin/llama-bench" -m .dev/model.gguf -ngl 99 -p 32 -n 8 -r 1 -o jsonl -v > /tmp/c.out 2> /tmp/c.err
  rc=$?
  kill $holder; wait $holder 2>/dev/null
  echo "client on CUDA0, $leave MiB left: exit $rc" | tee -a "$out/summary.txt"
  if grep -q "cudaMalloc failed" /tmp/c.err; then
    cp /tmp/c.err "$out/cuda-oom-client-v.log"; echo "leave=$leave" >> "$out/summary.txt"; break
  fi
done
for leave in 700 600 520 460 420; do
  hold $leave
  stdbuf -oL -eL "$bin/ggml-rpc-server" -d CUDA0 -p 50052 > /tmp/s.log 2>&1 &
  server=$!
  sleep 3
  # the client sees no GPU of its own: every layer goes to the server
  CUDA_VISIBLE_DEVICES= "$bin/llama-bench" -m .dev/model.gguf -ngl 99 -p 32 -n 8 -r 1 -o jsonl -v \
    --rpc 127.0.0.1:50052 > /tmp/r.out 2> /tmp/r.err
  rc=$?
  kill $server $holder; wait $server $holder 2>/dev/null
  echo "client via CUDA rpc-server, $leave MiB left: exit $rc" | tee -a "$out/summary.txt"
  if grep -q "cudaMalloc failed" /tmp/s.log; then
    cp /tmp/r.err "$out/cuda-oom-rpc-client-v.log"; cp /tmp/s.log "$out/cuda-oom-rpc-server.log"
    echo "leave=$leave" >> "$out/summary.txt"; break
  fi
done
grep -h "cudaMalloc\|failed to allocate\|unable to allocate\|error" "$out"/cuda-oom-*.log | head -20
