#!/usr/bin/env bash
# The per-token breakdown on a GPU (the `device` machine): two CUDA rpc-servers on one H200,
# then one alone,
# sampled with NVML, `breakdown = true`: its compute figures then come from the GPU's busy
# time as well as the servers' busiest thread. Needs .dev/ carried: llama-src.tgz, whl/
# (tomlkit), model.gguf (the generated tiny model).
set -euo pipefail
source bench/device_build.sh
cat > /tmp/cuda-breakdown.toml <<TOML
name = "cuda-breakdown"
sample_interval_s = 0.5
breakdown = true
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
model = "$PWD/.dev/model.gguf"
ngl = 99
prompt_tokens = [512]
gen_tokens = [128]
repetitions = 5
TOML
python3 -m rpctui.cli run /tmp/cuda-breakdown.toml 2>&1 | tee -a "$out/summary.txt"
# One server alone on the node: its GPU's busy time is its own.
python3 - <<'PY'
text = open("/tmp/cuda-breakdown.toml").read()
cut = text.index("[[nodes.servers]]\nport = 50053")
rest = text[cut:].split("\n", 3)[3]
open("/tmp/cuda-one.toml", "w").write(text[:cut] + rest.replace('name = "cuda-breakdown"', ''))
PY
sed -i 's/name = "cuda-breakdown"/name = "cuda-one-server"/' /tmp/cuda-one.toml
python3 -m rpctui.cli run /tmp/cuda-one.toml 2>&1 | tee -a "$out/summary.txt"
cp /tmp/data/rpctui/runs/*.jsonl "$out/" 2>/dev/null || true
