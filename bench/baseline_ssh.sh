#!/usr/bin/env bash
# The by-hand way, as seed 000 does it, scripted: start one rpc-server per node over ssh,
# wait for the ports, run llama-bench on the first node over them, stop the servers.
# Usage: baseline_ssh.sh KEY KNOWN_HOSTS BIN_DIR MODEL BENCH_ARGS ADDRESS...
set -euo pipefail
key=$1 kh=$2 bin=$3 model=$4 bench_args=$5
shift 5
opts=(-i "$key" -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes -o BatchMode=yes
      -o LogLevel=ERROR -l root)
rpc=()
for a in "$@"; do
  ssh "${opts[@]}" "$a" "setsid $bin/ggml-rpc-server -H $a -p 50052 -t 1 </dev/null >/dev/null 2>&1 &" &
  rpc+=("$a:50052")
done
wait
for a in "$@"; do
  until (exec 3<>"/dev/tcp/$a/50052") 2>/dev/null; do sleep 0.02; done
done
list=$(IFS=,; echo "${rpc[*]}")
ssh "${opts[@]}" "$1" "$bin/llama-bench -m $model --rpc $list $bench_args -o jsonl -v 2>/dev/null" >/dev/null
for a in "$@"; do ssh "${opts[@]}" "$a" "pkill -x ggml-rpc-server; true" & done
wait
