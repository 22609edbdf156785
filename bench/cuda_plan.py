"""The planner against real GPU loads (run on the `device` machine by bench/device_plan.sh
for CUDA, bench/device_vulkan.sh for Vulkan).

Two `ggml-rpc-server -d CUDA0` (or Vulkan0, RPCTUI_DEVICE) on one GPU plus the client's own
device (which comes after the RPC devices): default split, explicit splits with and without
the local GPU, tied embeddings, a mixture of experts, -ot onto a server, and (Vulkan) a
sliding-window model and mmap off. For each, `rpctui plan --json` then `rpctui run`; prints
every device's planned and allocated model, KV and compute MiB and writes them to
$OUT/cuda_plan.json (vulkan_plan.json).

    RPCTUI_BIN_DIR=/tmp/build/bin [RPCTUI_DEVICE=Vulkan0] [RPCTUI_SCALE=1] python3 bench/cuda_plan.py

RPCTUI_GDN=1 runs the Qwen3-Next shapes instead ($OUT/*_gdn.json). RPCTUI_SCALE=1 runs the
scale check (issue 15): the recurrent models, then the shapes of Llama 3 8B and 70B and
Mixtral 8x7B as sparse Q8_0 files; written to $OUT/*_scale.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above

DEVICE = os.environ.get("RPCTUI_DEVICE", "CUDA0")
SCALE = bool(os.environ.get("RPCTUI_SCALE"))
GDN = bool(os.environ.get("RPCTUI_GDN"))

#: (model, tensor split, -ot rule onto the second server, prompt tokens, flash attention)
CONFIGS: tuple[tuple, ...] = (
    ("tiny", None, None, 512, None),
    ("small", [1, 2, 1], None, 512, None),
    ("small", [2, 1, 1], r"blk\.[0-2]\.ffn_.*", 512, None),
    # Q8_0 rows of 288 and 800 values: CUDA pads them to 512 and aligns to 128 bytes; heads
    # of 36 have no CUDA flash-attention kernel, so it is off (as for 32-wide heads, where
    # mainline's "auto" crashes CUDA rpc-servers that hold every layer)
    ("tiny-q8", [1, 2, 1], None, 512, False),
    ("tiny-q8", [1, 1, 0], r"blk\.[0-2]\.ffn_.*", 256, False),
    ("tiny", [1, 1, 1], None, 256, False),
)
if DEVICE.startswith("Vulkan"):  # what the seeds' Vulkan clusters run: windows, mmap off
    CONFIGS += (("tiny-swa", None, None, 512, None), ("tiny-gpt-oss", [1, 1, 1], None, 512, None),
                ("small", None, None, 512, True, "mmap = false\n"))
if GDN:  # Qwen3-Next's gated delta net on this backend
    CONFIGS = (("tiny-qwen3next", None, None, 512, None),
               ("tiny-qwen3next", [1, 2, 1], None, 256, False),
               ("qwen3next-wide", [1, 1, 2], None, 512, None))
if SCALE:
    # issue 15's scale check: the recurrent models on this backend, then real models' shapes
    # (sparse Q8_0 files of zeros, rpctui.llama.tinymodel), a layer on each server and the
    # rest on the client's own device, the context and flash attention varied
    CONFIGS = (("tiny-mamba2", None, None, 512, None),
               ("tiny-granite-hybrid", [1, 2, 1], None, 512, None),
               ("shape-8b-q8", [1, 1, 30], None, 512, None),
               ("shape-8b-q8", [1, 1, 30], None, 2048, None),
               ("shape-8b-q8", [1, 1, 30], None, 512, False),
               ("shape-8x7b-q8", [1, 1, 30], None, 512, None),
               ("shape-70b-q8", [1, 1, 78], None, 512, None),
               ("shape-70b-q8", [1, 1, 78], None, 1024, False))


def profile(bin_dir: str, model: str, split: list[float] | None, ot: str | None,
            prompt: int, fa: bool | None, settings: str = "") -> str:
    servers = "".join(f'[[nodes.servers]]\nport = {p}\ndevices = ["{DEVICE}"]\n\n'
                      for p in (50052, 50053))
    extra = settings + (f"tensor_split = {split}\n" if split else "")
    if fa is not None:
        extra += f"flash_attn = {str(fa).lower()}\n"
    if ot:
        extra += f"override_tensors = [{{ pattern = '{ot}', server = \"gpu:50053\" }}]\n"
    return (f'name = "cuda-plan"\nheadroom_mib = 0\nsample_interval_s = 0\n\n'
            f'[[nodes]]\nname = "gpu"\nhost = "local"\nmain = true\nbin_dir = "{bin_dir}"\n\n'
            f'{servers}[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [{prompt}]\n'
            f'gen_tokens = [32]\nrepetitions = 1\n{extra}')


def main() -> None:
    bin_dir = os.environ["RPCTUI_BIN_DIR"]
    work = Path(tempfile.mkdtemp(prefix="rpctui-cuda-plan-"))
    env = {**os.environ, "XDG_DATA_HOME": str(work / "data")}
    results = []
    for i, (name, split, ot, prompt, fa, *settings) in enumerate(CONFIGS):
        path = work / f"{i}.toml"
        path.write_text(profile(bin_dir, str(ensure_model(name)), split, ot, prompt, fa,
                                *settings))
        cli = [sys.executable, "-m", "rpctui.cli"]
        plan = subprocess.run([*cli, "plan", str(path), "--json"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        run = subprocess.run([*cli, "run", str(path), "--force"], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        runs = sorted((work / "data" / "rpctui" / "runs").glob("*.jsonl"),
                      key=lambda p: p.stat().st_mtime)
        if i == 0 and "OUT" in os.environ:  # one whole recording, for a fixture
            (Path(os.environ["OUT"]) / f"{DEVICE.lower()}-run.jsonl").write_bytes(
                runs[-1].read_bytes())
        events = [json.loads(line) for line in runs[-1].read_text().splitlines()]
        keep = [e for e in events if e["type"] in ("BufferAllocated", "BufferPlanned",
                                                    "PlanChecked", "NodeProbed")]
        results.append({"model": name, "split": split, "ot": ot, "prompt": prompt, "fa": fa,
                        "profile": path.read_text(), "plan_rc": plan.returncode,
                        "plan": json.loads(plan.stdout) if plan.returncode == 0 else plan.stderr,
                        "run_rc": run.returncode, "run_stderr": run.stderr[-3000:],
                        "settings": settings, "events": keep})
        print(f"== {name} split {split} ot {ot} p{prompt}: plan rc {plan.returncode}, "
              f"run rc {run.returncode}")
        for e in keep:
            if e["type"] == "PlanChecked":
                for row in e["rows"]:
                    print("   model/KV", row)
                for row in e["compute"]:
                    print("   compute", row, flush=True)
        out = Path(os.environ.get("OUT", work))  # as it goes: a timeout keeps what ran
        kind = "scale" if SCALE else "gdn" if GDN else "plan"
        name = f"{DEVICE.rstrip('0123456789').lower()}_{kind}.json"
        (out / name).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
