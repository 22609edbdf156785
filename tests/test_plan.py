"""The memory planner against real llama.cpp loads, a split that fits where the default does
not, and planning speed on a large model's header."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from rpctui.llama.plan import read_model
from rpctui.llama.tinymodel import ensure_model
from rpctui.profile_load import load_profile
from tests.conftest import recorded_events, rig_profile, rpctui
from tests.rig import Rig

# (servers, model, tensor split, build, -ot rule): architectures and sizes, default and
# explicit splits, 2 and 4 servers, two builds, and tensors overridden onto a server.
OT_FFN_0_2_TO_N2 = (r"blk\.[0-2]\.ffn_.*", "n2:50052")
CONFIGS = [
    (2, "tiny", None, "mainline", None),
    (2, "tiny", [3, 1], "mainline", None),
    (2, "tiny", [1, 3], "mainline", None),
    (2, "tiny", [1, 0], "mainline", None),
    (4, "tiny", None, "mainline", None),
    (2, "tiny-tied", None, "mainline", None),
    (4, "small", [1, 2, 2, 1], "mainline", None),
    (2, "tiny", None, "b6110", None),
    (2, "small", [2, 1], "b6110", None),
    (2, "tiny", [1, 1], "mainline", OT_FFN_0_2_TO_N2),
    (4, "small", None, "mainline", OT_FFN_0_2_TO_N2),
]


def predicted_and_actual(rig: Rig, bins, tmp_path: Path, servers: int, model_name: str,
                         split: list[float] | None, build: str,
                         ot: tuple[str, str] | None = None) -> list[tuple[str, str, float, float]]:
    """(kind, device, predicted MiB, llama.cpp's MiB) for every RPC device of one real load."""
    model = str(ensure_model(model_name))
    ts = f"tensor_split = {split}\n" if split else ""
    if ot:
        ts += f"override_tensors = [{{ pattern = '{ot[0]}', server = \"{ot[1]}\" }}]\n"
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\ngen_tokens = [8]\n'
           f'repetitions = 1\n{ts}')
    profile = rig_profile(rig, tmp_path / f"{model_name}-{servers}.toml", bin_dir=bins[build],
                          model=model, servers=servers, job=job, extra="headroom_mib = 0")
    plan = rpctui(tmp_path, "plan", str(profile), "--json")
    assert plan.returncode == 0, plan.stderr
    rows = {r["device"]: r for r in json.loads(plan.stdout)["devices"]}
    run = rpctui(tmp_path, "run", str(profile))
    assert run.returncode == 0, run.stderr
    actual: dict[tuple[str, str], float] = {}
    events = recorded_events(tmp_path)
    checked = [e for e in events if e["type"] == "PlanChecked"]
    assert checked and checked[0]["worst_error_mib"] <= 1.0, "the run kept no plan check"
    for e in events:
        if e["type"] == "BufferAllocated" and e["endpoint"] and e["kind"] in ("model", "kv"):
            key = (e["kind"], e["device"])
            actual[key] = max(actual.get(key, 0.0), e["mib"])
    out = []
    for device, row in rows.items():
        if not device.startswith("RPC"):
            continue
        for kind in ("model", "kv"):
            out.append((kind, device, row[f"{kind}_mib"], actual.get((kind, device), 0.0)))
    return out


@pytest.mark.parametrize("servers,model_name,split,build,ot", CONFIGS)
def test_prediction_matches_llama_cpp(clean_rig: Rig, bins, tmp_path: Path, servers: int,
                                      model_name: str, split: list[float] | None,
                                      build: str, ot: tuple[str, str] | None) -> None:
    for kind, device, predicted, actual in predicted_and_actual(
            clean_rig, bins, tmp_path, servers, model_name, split, build, ot):
        # llama.cpp prints MiB with two decimals: allow that rounding plus the stated bound.
        bound = max(0.01 * actual, 1.0 if kind == "model" else 0.0) + 0.005
        assert abs(predicted - actual) <= bound, (kind, device, predicted, actual)


def test_suggested_split_loads_where_the_default_runs_out_of_memory(clean_rig: Rig, bins, model,
                                                                     tmp_path: Path) -> None:
    """n2's server is capped at 24 MiB of address space (its budget says 10 MiB): the default
    split sends it 20 MiB and the load fails; the planner's split loads and runs the bench."""
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\ngen_tokens = [8]\n'
           f'repetitions = 1\n')
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, job=job, extra="headroom_mib = 0")
    text = profile.read_text()
    n2 = text.index('name = "n2"')
    text = text[:n2] + text[n2:].replace(
        "threads = 1", "threads = 1\naddress_space_limit_mib = 24\nmemory_mib = 10", 1)
    profile.write_text(text)
    refused = rpctui(tmp_path, "run", str(profile))
    assert refused.returncode == 3
    assert "the memory plan does not fit: RPC0[" in refused.stderr and "rpctui plan --apply" in refused.stderr
    forced = rpctui(tmp_path, "run", str(profile), "--force")
    assert forced.returncode == 1 and "that server ran out of memory (node n2)" in forced.stderr
    applied = rpctui(tmp_path, "plan", str(profile), "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "wrote tensor_split" in applied.stderr
    split = load_profile(profile).job.tensor_split
    assert split and split[1] < split[0]
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [r["test"] for r in json.loads(result.stdout)] == ["pp32", "tg8"]


def test_planning_a_large_model_reads_only_headers(tmp_path: Path) -> None:
    """A 60 GB, 1,000-tensor model: the header is written, the data is a sparse hole."""
    import gguf

    path = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    layers, embd, ff = 111, 8192, 28672
    writer.add_block_count(layers)
    writer.add_embedding_length(embd)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_context_length(8192)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(150_000)])
    shapes = {"token_embd.weight": (150_000, embd), "output.weight": (150_000, embd),
              "output_norm.weight": (embd,)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_q.weight": (embd, embd), f"blk.{i}.attn_k.weight": (1024, embd),
                       f"blk.{i}.attn_v.weight": (1024, embd), f"blk.{i}.attn_output.weight": (embd, embd),
                       f"blk.{i}.ffn_gate.weight": (ff, embd), f"blk.{i}.ffn_up.weight": (ff, embd),
                       f"blk.{i}.ffn_down.weight": (embd, ff), f"blk.{i}.attn_norm.weight": (embd,),
                       f"blk.{i}.ffn_norm.weight": (embd,)})
    total = 0
    for name, shape in list(shapes.items())[:1000]:
        q8 = len(shape) == 2
        n = int(np.prod(shape))
        nbytes = n // 32 * 34 if q8 else n * 4
        writer.add_tensor_info(name, shape[::-1], np.dtype(np.float32), nbytes,
                               raw_dtype=gguf.GGMLQuantizationType.Q8_0 if q8 else None)
        total += nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    os.truncate(path, path.stat().st_size + total)
    assert path.stat().st_size > 60e9 and path.stat().st_blocks * 512 < 50e6  # sparse
    start = time.perf_counter()
    info = read_model(path)
    elapsed = time.perf_counter() - start
    assert len(info.tensors) == 1000 and info.size_bytes == total
    assert elapsed < 1.0, elapsed


def test_moe_experts_placed_on_a_chosen_server(clean_rig: Rig, bins, tmp_path: Path) -> None:
    """A real mixture-of-experts GGUF (4 experts, Mixtral-style llama): plan --experts-on sends
    every expert tensor to n2 with -ot rules, writes them, and llama.cpp loads as planned."""
    model = str(ensure_model("tiny-moe"))
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\ngen_tokens = [8]\n'
           f'repetitions = 1\n')
    profile = rig_profile(clean_rig, tmp_path / "moe.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, job=job, extra="headroom_mib = 0")
    plan = rpctui(tmp_path, "plan", str(profile), "--experts-on", "n2:50052", "--apply")
    assert plan.returncode == 0, plan.stderr
    assert "suggested for the experts" in plan.stdout and "experts fit" in plan.stdout
    rules = load_profile(profile).job.override_tensors
    assert [(r.pattern, r.server) for r in rules] == [
        (r"blk\.(0|1|2|3|4|5|6|7)\.ffn_(gate|up|down)_exps", "n2:50052")]
    run = rpctui(tmp_path, "run", str(profile))
    assert run.returncode == 0, run.stderr
    events = recorded_events(tmp_path)
    check = next(e for e in events if e["type"] == "PlanChecked")
    assert check["worst_error_mib"] <= 1.0, check
    n2 = next(e["mib"] for e in events if e["type"] == "BufferAllocated" and e["kind"] == "model"
              and e["endpoint"] == f"{clean_rig.nodes[1].address}:50052")
    assert n2 >= 24.0  # 8 layers x 3 MiB of experts, plus its share of the rest
    unknown = rpctui(tmp_path, "plan", str(profile), "--experts-on", "n9:1")
    assert unknown.returncode == 2 and "--experts-on: no server n9:1" in unknown.stderr


def test_prediction_matches_a_real_cuda_load() -> None:
    """The H100 recording (bench/device_check.sh): two -d CUDA0 rpc-servers plus the client's
    own CUDA0, which comes after the RPC devices. The plan reproduces every buffer."""
    from rpctui.llama.plan import Device, place
    from rpctui.results import read_run
    from rpctui import events as ev

    events = read_run(Path(__file__).parent / "fixtures" / "run-h100-two-cuda-servers.jsonl")
    probed = next(e for e in events if isinstance(e, ev.NodeProbed))
    cuda_free = next(d[3] for d in probed.devices if d[0] == "CUDA0")
    devices = [Device("RPC0[127.0.0.1:50052]", "gpu", cuda_free),
               Device("RPC0[127.0.0.1:50053]", "gpu", cuda_free),
               Device("CUDA0", "gpu", cuda_free)]
    model_info = read_model(ensure_model("tiny"))
    # The job was llama-bench -p 512 -n 128: contexts of 512 and 128 tokens, padded to 256.
    placement = place(model_info, devices, 99, None, None, n_ctx=512)
    actual: dict[tuple[str, str], float] = {}
    for e in events:  # each bench test allocates its own KV: the largest is the plan's
        if isinstance(e, ev.BufferAllocated) and e.kind in ("model", "kv"):
            actual[(e.kind, e.device)] = max(actual.get((e.kind, e.device), 0.0), e.mib)
    for device in ("RPC0[127.0.0.1:50052]", "RPC0[127.0.0.1:50053]", "CUDA0"):
        assert round(placement.mib("model")[device], 2) == actual[("model", device)]
        assert round(placement.mib("kv")[device], 2) == actual[("kv", device)]
