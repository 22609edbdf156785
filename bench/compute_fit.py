"""Compute buffers: record real loads, fit the planner's estimate rule, print its error.

llama.cpp sizes its compute buffers by reserving the worst-case graph, which the GGUF file
alone does not describe, so rpctui estimates them with a rule fitted on recorded runs
(rpctui/llama/compute.py). This script makes those runs and refits the rule:

    .venv/bin/python bench/compute_fit.py collect [OUT.json]   # real loads, recorded
    .venv/bin/python bench/compute_fit.py fit [OUT.json]       # coefficients + errors
    .venv/bin/python bench/compute_fit.py check                # shapes the fit never saw

`collect` runs `rpctui run` on two loopback rpc-servers for each flavour (current mainline,
seed-era b6110, ik_llama.cpp), each generated model (dense, tied embeddings, larger, MoE;
RPCTUI_MODELS chooses others, such as tiny-mla, which the rule is not fitted on),
prompts of 32/128/512 tokens, a smaller -ub with the largest prompt, and flash attention
on and off; the split puts layers on both servers and the output layer on the second. Each
run is recorded as usual (JSONL); the compute buffer lines it parsed become the data.
`fit` prints the fitted coefficients in the form compute.py keeps them and the worst
relative error per flavour, role and flash-attention setting.
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

from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from rpctui.plan.compute import backend_of  # noqa: E402 - after the sys.path line above
from rpctui.plan.gguf import read_model  # noqa: E402 - after the sys.path line above

DATA = ROOT / "bench" / "compute_runs.json"
FLAVOURS = ("mainline", "b6110", "ik")
MODELS = ("tiny", "tiny-tied", "small", "tiny-moe")
SHAPES = ((32, None), (128, None), (512, None), (512, 128))  # (prompt tokens, ubatch)


def profile_text(flavour: str, bin_dir: str, model: str, prompt: int, ubatch: int | None,
                 fa: bool, port: int, servers: int = 2, device: str | None = None,
                 pipeline: bool = True) -> str:
    split = [0] + [1] * servers if flavour == "ik" else [1] * servers
    ub = f"ubatch_size = {ubatch}\n" if ubatch else ""
    if flavour == "mainline" and not pipeline:  # any -ot rule turns it off; this moves nothing
        ub += f"override_tensors = [{{ pattern = '^none$', server = \"local:{port}\" }}]\n"
    dev = f'devices = ["{device}"]\n' if device else ""
    blocks = "".join(f'[[nodes.servers]]\nport = {port + i}\nthreads = 1\n{dev}\n'
                     for i in range(servers))
    return (f'name = "compute-fit"\nheadroom_mib = 0\nsample_interval_s = 0\n\n'
            f'[[nodes]]\nname = "local"\nhost = "local"\nmain = true\nbin_dir = "{bin_dir}"\n\n'
            f'{blocks}'
            f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [{prompt}]\ngen_tokens = [8]\n'
            f'repetitions = 1\nflash_attn = {"true" if fa else "false"}\n'
            f'tensor_split = {split}\n{ub}')


def run_recorded(profile: Path, work: Path) -> tuple[int, list[dict]]:
    """`rpctui run` on a profile; its exit code and the events it recorded."""
    env = {**os.environ, "XDG_DATA_HOME": str(work / "data")}
    done = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "run", str(profile), "--force"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    runs = sorted((work / "data" / "rpctui" / "runs").glob("*.jsonl"),
                  key=lambda p: p.stat().st_mtime)
    return done.returncode, [json.loads(line) for line in runs[-1].read_text().splitlines()]


#: shapes the rule never saw: (flavour, model, prompt, ubatch, flash attention, servers,
#: pipeline parallelism)
HELD_OUT = (
    ("mainline", "small", 256, 64, True, 3, True),
    ("mainline", "tiny", 64, None, False, 3, True),
    ("mainline", "tiny-moe", 1024, 256, True, 2, True),
    ("mainline", "small", 384, None, True, 3, False),
    ("mainline", "tiny-tied", 200, 64, False, 2, False),
    ("b6110", "small", 256, None, False, 3, False),
    ("b6110", "tiny", 96, None, True, 2, False),
    ("ik", "small", 256, 64, False, 3, False),
    ("ik", "tiny-moe", 200, None, True, 2, False),
)


def check() -> float:
    """Plan and run each held-out shape; print every compute buffer next to its estimate
    (as the run's PlanChecked event keeps them) and return the worst relative error."""
    work = Path(tempfile.mkdtemp(prefix="rpctui-compute-check-"))
    worst = 0.0
    flavours = os.environ.get("RPCTUI_FLAVOURS", ",".join(FLAVOURS)).split(",")
    for i, (flavour, name, prompt, ubatch, fa, servers, pipeline) in enumerate(HELD_OUT):
        if flavour not in flavours:
            continue
        profile = work / f"{i}.toml"
        profile.write_text(profile_text(flavour, bin_dir_of(flavour), str(ensure_model(name)),
                                        prompt, ubatch, fa, 52200, servers,
                                        os.environ.get("RPCTUI_DEVICE"), pipeline))
        rc, events = run_recorded(profile, work)
        checked = [e for e in events if e["type"] == "PlanChecked"]
        for device, est, got in checked[0]["compute"] if checked else []:
            err = abs(est - got) / got if got else 0.0
            worst = max(worst, err)
            print(f"  {flavour:8s} {name:9s} p{prompt:<5d} ub{ubatch or '-':<4} fa {int(fa)} "
                  f"pp {int(pipeline)} "
                  f"{device:24s} estimated {est:7.2f} allocated {got:7.2f} MiB "
                  f"({100 * err:.1f} %)")
        if rc != 0 or not checked:
            print(f"  {flavour} {name} p{prompt}: run failed (rc {rc})")
    print(f"{len(HELD_OUT)} held-out loads; worst compute-buffer error {100 * worst:.1f} %")
    return worst


def bin_dir_of(flavour: str) -> str:
    """The flavour's build; RPCTUI_BIN_DIR names one instead (the CUDA build on the device
    machine, which has no network to fetch sources)."""
    return os.environ.get("RPCTUI_BIN_DIR") or str(ensure_build(flavour).bin_dir)


def grid(flavour: str) -> list[tuple[int, int | None, bool, bool]]:
    """(prompt, ubatch, flash attention, pipeline parallelism) for one flavour: only current
    mainline has pipeline parallelism over RPC, so it is measured on and off there."""
    pipelines = (True, False) if flavour == "mainline" else (False,)
    return [(p, ub, fa, pp) for p, ub in SHAPES for fa in (True, False) for pp in pipelines]


def collect(out: Path) -> None:
    """Every flavour (RPCTUI_FLAVOURS, comma-separated, to choose) on CPU servers, or on
    the GPU named by RPCTUI_DEVICE (e.g. CUDA0)."""
    rows = []
    work = Path(tempfile.mkdtemp(prefix="rpctui-compute-"))
    port = 52100
    device = os.environ.get("RPCTUI_DEVICE")
    flavours = os.environ.get("RPCTUI_FLAVOURS", ",".join(FLAVOURS)).split(",")
    models = os.environ.get("RPCTUI_MODELS", ",".join(MODELS)).split(",")
    for flavour in flavours:
        bin_dir = bin_dir_of(flavour)
        for name in models:
            model = str(ensure_model(name))
            for prompt, ubatch, fa, pipeline in grid(flavour):
                profile = work / f"{flavour}-{name}-{prompt}-{ubatch}-{fa}-{pipeline}.toml"
                profile.write_text(profile_text(flavour, bin_dir, model, prompt, ubatch, fa,
                                                port, device=device, pipeline=pipeline))
                rc, events = run_recorded(profile, work)
                got: dict[str, float] = {}
                for e in events:
                    if e["type"] == "BufferAllocated" and e["kind"] == "compute":
                        if not e["endpoint"] and e["device"] != "CPU":
                            continue  # a local GPU of the client: holds no layers here
                        role = ("host" if not e["endpoint"] else
                                "layers" if e["endpoint"].endswith(f":{port}") else "output")
                        got[role] = max(got.get(role, 0.0), e["mib"])
                print(f"{flavour:8s} {name:9s} p{prompt:<4d} ub{ubatch or '-':<4} fa {int(fa)} "
                      f"pp {int(pipeline)} rc {rc} {got}", flush=True)
                if rc == 0:
                    rows.append({"flavour": flavour, "model": name, "prompt": prompt,
                                 "ubatch": ubatch, "flash_attn": fa, "pipeline": pipeline,
                                 "compute_mib": got, "backend": backend_of(device or "CPU")})
                    out.write_text(json.dumps(rows, indent=1) + "\n")  # as it goes
    print(f"{len(rows)} runs -> {out}")


def fit(data: Path) -> None:
    from rpctui.plan.compute import ROLES, features, fit_rule, padded_ctx, reserve_tokens

    rows = json.loads(data.read_text())
    models = {name: read_model(ensure_model(name)) for name in MODELS}
    samples = []
    for r in rows:
        flavour = "seed-era" if r["flavour"] == "b6110" else r["flavour"]
        n_ctx = padded_ctx(flavour, r["prompt"], r["flash_attn"])
        tokens = reserve_tokens(flavour, r["prompt"], n_ctx, r["ubatch"], None)
        for role in ROLES:
            if role in r["compute_mib"]:
                x = features(models[r["model"]], tokens, n_ctx, r["flash_attn"], role)
                samples.append((flavour, role, r["flash_attn"], r["pipeline"], x,
                                r["compute_mib"][role]))
    rules, errors = fit_rule(samples)
    print("RULES = {")
    for key, planes in sorted(rules.items()):
        print(f"    {key!r}: (")
        for p in planes:
            print(f"        {tuple(round(c, 4) for c in p)},")
        print("    ),")
    print("}\nERRORS = {")
    for key, (err, _n) in sorted(errors.items()):
        print(f"    {key!r}: {round(err, 4)},")
    print("}")
    worst = 0.0
    for key, (err, n) in sorted(errors.items()):
        print(f"  {key}: {n} loads, worst error {100 * err:.1f} %")
        worst = max(worst, err)
    print(f"{len(samples)} buffers from {len(rows)} recorded runs; worst relative error "
          f"{100 * worst:.1f} %")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "fit"
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else DATA
    if cmd == "collect":
        collect(path)
    elif cmd == "check":
        check()
    else:
        fit(path)
