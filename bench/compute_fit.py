"""Compute buffers: record real loads, fit the planner's estimate rule, print its error.

llama.cpp sizes its compute buffers by reserving the worst-case graph, which the GGUF file
alone does not describe, so rpctui estimates them with a rule fitted on recorded runs
(rpctui/plan/compute.py). This script makes those runs and refits the rule:

    .venv/bin/python bench/compute_fit.py collect [OUT.json]   # real loads, recorded
    .venv/bin/python bench/compute_fit.py fit [OUT.json] [--write]  # the rules (--write:
                                                       # into rpctui/plan/compute_rules.py)
    .venv/bin/python bench/compute_fit.py check                # shapes the fit never saw

`collect` runs `rpctui run` on two loopback rpc-servers for each flavour (current mainline,
seed-era b6110, ik_llama.cpp), each generated model (dense, tied embeddings, larger, MoE;
RPCTUI_MODELS chooses others: tiny-mla, which the rule is not fitted on, or tiny-mamba2 and
tiny-granite-hybrid, recorded in compute_runs_recurrent.json),
prompts of 32/128/512 tokens, a smaller -ub with the largest prompt, and flash attention
on and off; the split puts layers on both servers and the output layer on the second. Each
run is recorded as usual (JSONL); the compute buffer lines it parsed become the data.
`fit` fits the rules from above (no recorded buffer above its estimate; the GPU loads kept
as test fixtures join the CPU runs) and prints them with each one's worst over-estimate;
`--write` writes them into rpctui/plan/compute_rules.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from rpctui.plan.compute import Sample, backend_of  # noqa: E402 - after the sys.path line above
from rpctui.plan.gguf import read_model  # noqa: E402 - after the sys.path line above

DATA = ROOT / "bench" / "compute_runs.json"
#: every recorded set the rule is fitted on: the CPU runs of the three builds, 20 on an H100,
#: and the recurrent models (Mamba-2, a Mamba-2/attention hybrid) on mainline and b6110
RECORDED = (DATA, ROOT / "bench" / "compute_runs_cuda.json",
            ROOT / "bench" / "compute_runs_recurrent.json")
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
    (as the run's PlanChecked event keeps them) and return the worst relative error; say
    how many estimates fell below their buffer (the planner must never)."""
    work = Path(tempfile.mkdtemp(prefix="rpctui-compute-check-"))
    worst = 0.0
    short = 0
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
            short += est < got
            print(f"  {flavour:8s} {name:9s} p{prompt:<5d} ub{ubatch or '-':<4} fa {int(fa)} "
                  f"pp {int(pipeline)} "
                  f"{device:24s} estimated {est:7.2f} allocated {got:7.2f} MiB "
                  f"({'+' if est >= got else '-'}{100 * err:.1f} %)")
        if rc != 0 or not checked:
            print(f"  {flavour} {name} p{prompt}: run failed (rc {rc})")
    print(f"{len(HELD_OUT)} held-out loads; worst compute-buffer error {100 * worst:.1f} %; "
          f"{short} estimates below their buffer")
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


#: real GPU loads kept as test fixtures (bench/device_plan.sh, bench/device_vulkan.sh): they
#: join the CPU runs in the fit, each device in its role
FIXTURES = (("cuda-plan-h100.json", "cuda"), ("vulkan-plan-h200.json", "vulkan"),
            ("vulkan-plan-h200-b6110.json", "vulkan"), ("vulkan-plan-h200-ik.json", "vulkan"))
RULES_PY = ROOT / "rpctui" / "plan" / "compute_rules.py"


def cpu_samples(data: Path) -> list[Sample]:
    from rpctui.plan.compute import ROLES, family, features, padded_ctx, reserve_tokens

    rows = json.loads(data.read_text())
    models = {name: read_model(ensure_model(name)) for name in {r["model"] for r in rows}}
    samples = []
    for r in rows:
        flavour = "seed-era" if r["flavour"] == "b6110" else r["flavour"]
        model = models[r["model"]]
        n_ctx = padded_ctx(flavour, r["prompt"], r["flash_attn"],
                           len(model.recurrent_layers) == model.n_layer)
        tokens = reserve_tokens(flavour, r["prompt"], n_ctx, r["ubatch"], None)
        for role in ROLES:
            if role in r["compute_mib"]:
                x = features(models[r["model"]], tokens, n_ctx, r["flash_attn"], role)
                samples.append((flavour, role, r["flash_attn"], r.get("pipeline", True),
                                family(model), x, r["compute_mib"][role]))
    return samples


def replay(name: str, backend: str) -> list[tuple[dict, Any]]:
    """Each completed load of a GPU fixture (bench/cuda_plan.py's output) with the placement
    the planner gives it now, for the flavour that ran it (the plan's BufferPlanned event says
    which): (the record, a Replayed)."""
    from rpctui.plan.compute import default_flash_attn, padded_ctx, pipeline_parallel, reserve_tokens
    from rpctui.plan.ik import IkRule
    from rpctui.plan.kernels import flash_attention
    from rpctui.plan.kv import layout
    from rpctui.plan.placement import Device, fill, layer_devices
    from rpctui.profile.load import parse_profile

    out = []
    for r in json.loads((ROOT / "tests" / "fixtures" / name).read_text()):
        if r["run_rc"] != 0:
            continue
        planned = next(e for e in r["events"] if e["type"] == "BufferPlanned")
        flavour = planned.get("flavour", "mainline")
        devices = [Device(row[0], row[1], row[4], backend=backend) for row in planned["rows"]]
        model = read_model(ensure_model(r["model"]))
        server = devices[1].name if len(devices) > 1 else devices[0].name
        rules = [(r["ot"], server)] if r["ot"] else None
        fa = default_flash_attn(flavour) if r["fa"] is None else r["fa"]
        if flavour == "ik":
            where = IkRule(parse_profile(r["profile"]), None, model,  # type: ignore[arg-type]
                           devices).layer_devices(r["split"])
        else:
            where = layer_devices(model.n_layer, devices, 99, r["split"], flavour)
        n_ctx = padded_ctx(flavour, r["prompt"], fa)
        tokens = reserve_tokens(flavour, r["prompt"], n_ctx, None, None)
        kv = layout(model, flavour, n_ctx, tokens, 1, False, fa)
        mmap = "mmap = false" not in "".join(r.get("settings") or [])
        placement = fill(model, where, rules, n_ctx, mmap=mmap,
                         backends={d.name: d.backend for d in devices}, kv=kv)
        resolved = flash_attention(r["fa"], flavour, model, devices, placement)
        if resolved and resolved[0] != fa:  # "auto" resolved otherwise: the graph it planned
            fa = resolved[0]
            n_ctx = padded_ctx(flavour, r["prompt"], fa)
            tokens = reserve_tokens(flavour, r["prompt"], n_ctx, None, None)
            kv = layout(model, flavour, n_ctx, tokens, 1, False, fa)
            placement = fill(model, where, rules, n_ctx, mmap=mmap,
                             backends={d.name: d.backend for d in devices}, kv=kv)
        pp = pipeline_parallel(flavour, len(devices), True, bool(rules))
        out.append((r, Replayed(model, flavour, devices, placement, fa, n_ctx, tokens, kv, pp)))
    return out


@dataclass
class Replayed:
    """One recorded GPU load as the planner places it now."""

    model: Any
    flavour: str
    devices: list
    placement: Any
    fa: bool
    n_ctx: int
    tokens: int
    kv: Any
    pipeline: bool

    @property
    def swa_cells(self) -> int:
        return self.kv.swa if self.kv.swa_layers else 0


def largest_buffers(events: list[dict]) -> dict[tuple[str, str, str], float]:
    """(kind, device, cache) -> the largest allocation of a recorded load's tests. ik_llama.cpp's
    host compute on a GPU build is its Vulkan_Host buffer: counted as the host's (CPU)."""
    largest: dict[tuple[str, str, str], float] = {}
    for e in events:
        if e["type"] == "BufferAllocated":
            device = ("CPU" if e["kind"] == "compute" and e["device"].endswith("_Host")
                      else e["device"])
            key = (e["kind"], device, e.get("cache", ""))
            largest[key] = max(largest.get(key, 0.0), e["mib"])
    return largest


def fixture_samples(name: str, backend: str) -> list[Sample]:
    """Each compute buffer of the recorded GPU loads, with the features and role the planner
    gives its device (the placement rebuilt as the plan made it)."""
    from rpctui.plan.compute import family, features

    samples = []
    for r, p in replay(name, backend):
        output = p.placement.layer_device.get(p.model.n_layer, "CPU")
        got = {device: mib for (kind, device, _cache), mib in largest_buffers(r["events"]).items()
               if kind == "compute"}
        for device, mib in got.items():
            role = "output" if device == output else "host" if device == "CPU" else "layers"
            x = features(p.model, p.tokens, p.n_ctx, p.fa, role, p.swa_cells)
            samples.append((p.flavour, role, p.fa, p.pipeline, family(p.model), x, mib))
    return samples


def fit(data: Path, write: bool) -> None:
    from rpctui.plan.compute import fit_rule

    samples = [s for path in (data, *RECORDED[1:]) for s in cpu_samples(path)]
    for name, backend in FIXTURES:
        samples += fixture_samples(name, backend)
    rules, over, domain = fit_rule(samples)
    text = ['"""Compute-buffer rules, fitted from above on recorded loads: written by',
            "`bench/compute_fit.py fit --write` (bench/compute_runs.json and the GPU fixtures);",
            'do not edit by hand. The features are rpctui.plan.compute.FEATURES."""', "",
            "#: flavour[+pp]/role/fa -> one coefficient vector per phase of the layer graph",
            "#: (attention, then feed-forward); the estimate is the larger of the two",
            "RULES: dict[str, tuple[tuple[float, ...], ...]] = {"]
    for key, planes in sorted(rules.items()):
        text.append(f"    {key!r}: (")
        # rounded up: with features of 0 or more, the written rule stays above the data
        text += [f"        {tuple(math.ceil(c * 1e4) / 1e4 for c in p)}," for p in planes]
        text.append("    ),")
    text += ["}", "#: the worst over-estimate of each rule on its data (relative; none is under)",
             "OVER: dict[str, float] = {"]
    text += [f"    {key!r}: {round(err, 4)}," for key, (err, _n) in sorted(over.items())]
    text += ["}", "#: the largest value of each feature in each rule's data (MiB of f32)",
             "DOMAIN: dict[str, tuple[float, ...]] = {"]
    text += [f"    {key!r}: {tuple(round(v, 4) for v in d)}," for key, d in sorted(domain.items())]
    text.append("}")
    if write:
        RULES_PY.write_text("\n".join(text) + "\n")
        print(f"wrote {RULES_PY.relative_to(ROOT)}")
    else:
        print("\n".join(text))
    worst = 0.0
    for key, (err, n) in sorted(over.items()):
        print(f"  {key}: {n} buffers, worst over-estimate {100 * err:.1f} %, none under")
        worst = max(worst, err)
    print(f"{len(samples)} buffers; worst over-estimate {100 * worst:.1f} %")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "fit"
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else DATA
    if cmd == "collect":
        collect(path)
    elif cmd == "check":
        check()
    else:
        fit(DATA if len(sys.argv) < 3 or sys.argv[2] == "--write" else path,
            "--write" in sys.argv)
