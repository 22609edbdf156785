#!/usr/bin/env bash
# Cache fill with tensors of 4 GiB and more (issue 13), on the `device` machine (its RAM and
# disk): a sparse model whose attn_q and attn_output are 4.3 GB each (f16, 46592 wide) and
# whose output.weight is 3.0 GB, one CPU rpc-server with a tensor cache (-c) filled from the
# node's copy by rpctui, then the first load: the bytes it sent that server, against the
# model's. Carry .dev (llama-src.tgz, whl/, cache/: bench/device_prep.sh makes it).
set -uo pipefail
out="${OUT:-/tmp/out}"; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .dev/whl/*.whl 2>/dev/null
export PYTHONPATH="/tmp/site:$PWD" XDG_CACHE_HOME=/tmp/xdg XDG_DATA_HOME=/tmp/data PYTHONUNBUFFERED=1
src=/tmp/xdg/rpctui/src/llama_cpp_python-0.3.36
if [ ! -f "$src/.unpacked" ]; then
  mkdir -p "$src/vendor" /tmp/xdg/rpctui/src/x && tar xzf .dev/llama-src.tgz -C "$src/vendor"
  cp -r .dev/cache/src/x/* /tmp/xdg/rpctui/src/x/ && touch "$src/.unpacked"
fi
python3 - <<'PY' 2>&1 | tee "$out/bigtensor.txt"
import json, subprocess, sys, time
from pathlib import Path
from rpctui.llama.build import ensure_build
from rpctui.llama.tinymodel import TinySpec, write_model

t = time.time()
bin_dir = ensure_build("mainline").bin_dir
print(f"mainline (CPU) built in {time.time() - t:.0f} s", flush=True)
spec = TinySpec(layers=1, embd=46592, ff=256, heads=128, kv_heads=1, ctx=256, sparse=True)
model = write_model(spec, Path("/tmp/models") / f"{spec.stem}.gguf")
profile = Path("/tmp/big.toml")
profile.write_text(f'''name = "big-tensors"
headroom_mib = 0
[[nodes]]
name = "gpu"
host = "local"
main = true
bin_dir = "{bin_dir}"
[[nodes.servers]]
port = 50052
cache = true
cache_fill = true
env = {{ LLAMA_CACHE = "/tmp/llama-cache" }}
[job]
model = "{model}"
ngl = 99
prompt_tokens = [8]
gen_tokens = [1]
repetitions = 1
''')
t = time.time()
run = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "run", str(profile)],
                     capture_output=True, text=True)
print(f"rpctui run: rc {run.returncode} in {time.time() - t:.0f} s")
print(run.stderr[-2500:])
runs = sorted(Path("/tmp/data/rpctui/runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
events = [json.loads(line) for line in runs[-1].read_text().splitlines()]
for e in events:
    if e["type"] in ("CacheFilled", "LoadFinished"):
        print(json.dumps(e))
files = sorted(Path("/tmp/llama-cache/rpc").glob("*"))
print("cache files:", [(f.name, f.stat().st_size) for f in files if f.name != "rpctui-fill.json"])
PY
