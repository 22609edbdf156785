"""Knowing llama.cpp: probing real binaries, translating settings per build, parsing real output."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from rpctui.engine.probe import probe_argv, probe_script
from rpctui.engine.provision import HIP_TOO_OLD, install_hint, missing_tools, node_class, node_key
from rpctui.errors import UserError
from rpctui.hosts.local import LocalHost
from rpctui.llama import argv as largv
from rpctui.llama.bench import BenchStream, bench_label, parse_markdown
from rpctui.llama.build import FLAVOURS, backend_cmake
from rpctui.llama.caps import Capabilities, capabilities_from_probe
from rpctui.llama.logs import parse_buffer, parse_failure
from rpctui.profile.schema import Job, Node, Server, TensorOverride

FIX = Path(__file__).parent / "fixtures"

_CAPS: dict[str, Capabilities] = {}


def probe(bin_dir: str, model: str, servers: bool = True) -> Capabilities:
    """Run the real probe agent on this machine against a real build."""
    key = f"{bin_dir}:{servers}"
    if key not in _CAPS:
        node = Node(host="local", name="here", main=True,
                    servers=[Server(port=50199)] if servers else [])
        script = probe_script(node, [("127.0.0.1", 50199)], model, [bin_dir], True)
        result = asyncio.run(LocalHost().run(probe_argv(node), input=script, timeout=120))
        assert result.rc == 0, result.stderr
        _CAPS[key] = capabilities_from_probe("here", json.loads(result.stdout))
    return _CAPS[key]


@pytest.mark.parametrize("flavour,expected", [
    ("mainline", ("mainline", 11312, "0c1e570", "7.0.0", "ggml-rpc-server")),
    ("b6110", ("seed-era", 6110, "9a963895", "2.0.0", "rpc-server")),
    ("ik", ("ik", 4411, "55d3c05b", "3.5.2", "rpc-server")),
])
def test_probe_identifies_each_real_build(bins, model, flavour: str, expected: tuple) -> None:
    caps = probe(bins[flavour], model)
    name, number, commit, protocol, server = expected
    assert (caps.flavour, caps.build_number, caps.build_commit, caps.protocol) == (
        name, number, commit, protocol)
    assert caps.server is not None and caps.server.path.endswith("/" + server)
    assert caps.devices and caps.devices[0].name == "CPU" and caps.devices[0].total_mib
    assert caps.raw["model"]["magic"] == "GGUF"
    assert caps.raw["ports"] == [{"bind": "127.0.0.1", "port": 50199, "free": True}]


def test_mmap_and_flash_attention_are_spelled_per_build(bins, model) -> None:
    job = Job(model="m.gguf", mmap=False, flash_attn=True)
    bench = {f: largv.job_argv(probe(bins[f], model), job, "m.gguf", ["h:1"], {})
             for f in ("mainline", "b6110", "ik")}
    assert "-lm none" in " ".join(bench["mainline"]) and "-fa on" in " ".join(bench["mainline"])
    assert "-mmp 0" in " ".join(bench["b6110"]) and "-fa 1" in " ".join(bench["b6110"])
    assert "-mmp 0" in " ".join(bench["ik"])
    one_shot = dataclasses.replace(job, kind="cli")
    cli = {f: largv.job_argv(probe(bins[f], model), one_shot, "m.gguf", ["h:1"], {})
           for f in ("mainline", "b6110")}
    assert "-lm none" in " ".join(cli["mainline"])  # llama-completion on mainline
    assert cli["mainline"][0].endswith("llama-completion")
    assert "--no-mmap" in cli["b6110"] and "-fa" in cli["b6110"] and "-no-cnv" in cli["b6110"]


def test_rpc_list_and_buffer_names_per_build(bins, model) -> None:
    eps = ["10.0.0.1:50052", "10.0.0.2:50052"]
    job = Job(model="m", override_tensors=[TensorOverride(pattern="exps", server="b:50052")])
    names = {"b:50052": "10.0.0.2:50052"}
    ik_caps = probe(bins["ik"], model)
    ik = largv.job_argv(ik_caps, dataclasses.replace(job, override_tensors=[]), "m", eps, names)
    assert ik[ik.index("--rpc") + 1] == "10.0.0.1:50052|0,10.0.0.2:50052|0"
    assert ik[ik.index("-o") + 1] == "json"  # ik's llama-bench has no jsonl
    # ik's llama-bench looks -ot names up among its local backends before --rpc adds any
    # (seen failing with Vulkan servers on an H200): refused; its llama-cli has no -ot
    with pytest.raises(UserError) as info:
        largv.job_argv(ik_caps, job, "m", eps, names)
    assert "llama-bench cannot put tensors on an RPC server with -ot" in info.value.message
    with pytest.raises(UserError) as info:
        largv.job_argv(ik_caps, dataclasses.replace(job, kind="cli"), "m", eps, names)
    assert "has no -ot" in info.value.message
    seed_cli = dataclasses.replace(job, kind="cli")
    seed = largv.job_argv(probe(bins["b6110"], model), seed_cli, "m", eps, names)
    assert seed[seed.index("-ot") + 1] == "exps=RPC[10.0.0.2:50052]"
    # b6110's llama-bench resolves -ot names before any RPC device exists (seen failing).
    with pytest.raises(UserError) as info:
        largv.job_argv(probe(bins["b6110"], model), job, "m", eps, names)
    assert "llama-bench cannot put tensors on an RPC server with -ot" in info.value.message
    main = largv.job_argv(probe(bins["mainline"], model), job, "m", eps, names)
    assert main[main.index("-ot") + 1] == "exps=RPC0[10.0.0.2:50052]"
    assert main[main.index("-o") + 1] == "jsonl"


def test_memory_budget_is_passed_only_where_the_build_has_it(bins, model) -> None:
    node = Node(host="local")
    server = Server(port=50052, memory_mib=2048)
    seed, notes = largv.server_argv(probe(bins["b6110"], model), node, server)
    assert seed[-2:] == ["-m", "2048"] and notes == []
    mainline, notes = largv.server_argv(probe(bins["mainline"], model), node, server)
    assert "-m" not in mainline and "has no -m" in notes[0]


def test_unsupported_settings_name_node_build_and_alternative(bins, model) -> None:
    caps = probe(bins["b6110"], model)
    with pytest.raises(UserError) as info:
        largv.server_argv(caps, Node(host="x"), Server(devices=["CPU", "Vulkan0"]))
    assert str(info.value).startswith("node here: llama.cpp seed-era build 9a963895 (6110) serves "
                                      "one device per rpc-server")
    assert "one server per device" in info.value.fix
    with pytest.raises(UserError) as info:
        largv.job_argv(probe(bins["mainline"], model), Job(model="m", fit=False), "m", [], {})
    assert "mainline build 0c1e570 (11312) bench has no --fit" in info.value.message


def test_buffer_lines_of_every_spelling() -> None:
    mainline = [b for b in map(parse_buffer, (FIX / "mainline-bench-2srv-v.log").read_text()
                               .splitlines()) if b]
    assert mainline[:3] == [
        parse_buffer("load_tensors:   CPU_Mapped model buffer size =    15.62 MiB"),
        parse_buffer("load_tensors: RPC0[127.0.0.1:50052] model buffer size =     7.51 MiB"),
        parse_buffer("load_tensors: RPC0[127.0.0.1:50053] model buffer size =    20.13 MiB"),
    ]
    assert [(b.kind, b.endpoint, b.mib) for b in mainline[1:3]] == [
        ("model", "127.0.0.1:50052", 7.51), ("model", "127.0.0.1:50053", 20.13)]
    assert {b.kind for b in mainline} == {"model", "kv", "compute"}
    seed = [b for b in map(parse_buffer, (FIX / "b6110-bench-2srv-v.log").read_text()
                           .splitlines()) if b]
    assert seed[1].device == "RPC[127.0.0.1:50062]" and seed[1].endpoint == "127.0.0.1:50062"
    assert [b.kind for b in seed[3:5]] == ["kv", "kv"]
    hip = [b for b in map(parse_buffer, (FIX / "seed000-deepseek-hip.log").read_text()
                          .splitlines()) if b]
    assert [(b.device, b.mib) for b in hip] == [
        ("RPC[192.168.128.12:50054]", 49825.57), ("RPC[192.168.128.13:50054]", 58684.95),
        ("RPC[192.168.128.14:50054]", 58684.95), ("ROCm0", 48406.5), ("CPU_Mapped", 497.11)]
    qwen = [b for b in map(parse_buffer, (FIX / "seed000-qwen3-hsa-abort.log").read_text()
                           .splitlines()) if b]
    assert ("compute", "ROCm0", 308.75) in [(b.kind, b.device, b.mib) for b in qwen]
    assert parse_buffer("load_tensors: RPC0[h:1] model buffer size =     0.00 MiB") is None


def test_seed_failures_are_recognised() -> None:
    lines = (FIX / "seed000-qwen3-hsa-abort.log").read_text().splitlines()
    failures = [f for f in map(parse_failure, lines) if f]
    assert [f.kind for f in failures] == ["hip"]


def test_bench_stream_reads_jsonl_and_json_in_any_chunks() -> None:
    for name in ("mainline-bench-2srv.jsonl", "b6110-bench-2srv.json"):
        text = (FIX / name).read_text()
        for size in (1, 7, 4096):
            stream = BenchStream()
            rows = [r for i in range(0, len(text), size) for r in stream.feed(text[i:i + size])]
            assert [bench_label(r) for r in rows] == ["pp32", "tg8"], (name, size)
            assert all(r["avg_ts"] > 0 for r in rows)


def test_markdown_tables_from_the_seeds() -> None:
    rows = parse_markdown((FIX / "seed000-scaling-1.log").read_text())
    assert [(r["test"], r["t/s"]) for r in rows] == [("pp512", "404.67 ± 3.65"),
                                                      ("tg128", "33.50 ± 0.03")]
    assert rows[0]["backend"] == "Vulkan,RPC"
    headerless = parse_markdown((FIX / "seed000-deepseek-vulkan.log").read_text())
    assert [r["test"] for r in headerless] == ["pp512", "tg128"]


def test_cuda_builds_are_for_the_nodes_gpus() -> None:
    """nvidia-smi's compute_cap on the H200 ("9.0") makes a CUDA build for sm_90 alone: the flag
    is part of the build key and of the class of nodes that share binaries. There, the node
    build took 245 s; llama.cpp's own list of seven architectures had reached step 118 of 364
    after 530 s (docs/PERFORMANCE.md). A node whose GPUs are not known keeps that list."""
    caps = (FIX / "nvidia-smi-compute-cap-h200.txt").read_text().split()
    assert backend_cmake("cuda", caps) == ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90")
    assert backend_cmake("cuda", ["9.0", "8.6", "9.0"])[-1] == "-DCMAKE_CUDA_ARCHITECTURES=86;90"
    assert backend_cmake("cuda", ["12.0"])[-1] == "-DCMAKE_CUDA_ARCHITECTURES=120"
    assert backend_cmake("cuda") == ("-DGGML_CUDA=ON",)
    assert backend_cmake("vulkan", caps) == ("-DGGML_VULKAN=ON",)
    h200 = {"arch": "x86_64", "libc": "glibc-2.39", "driver": "580.159.04", "compute_caps": caps}
    ampere = {**h200, "compute_caps": ["8.6"]}
    mainline = FLAVOURS["mainline"]
    assert node_class(h200, "cuda") != node_class(ampere, "cuda")
    assert node_key(mainline, "cuda", h200) != node_key(mainline, "cuda", ampere)
    assert node_class(h200, "vulkan") == node_class(ampere, "vulkan")
    assert node_key(mainline, "vulkan", h200) == node_key(mainline, "vulkan", ampere)


def test_rocm_older_than_a_flavour_needs_is_named() -> None:
    """A node with hipcc, hipBLAS and rocBLAS of ROCm 5.2 (Debian 12's hipcc is 5.2.3): mainline
    needs 6.1 (its ggml-hip CMakeLists stops below it), b6110 5.5, ik names none."""
    info = {"os": "debian", "os_name": "Debian GNU/Linux 12 (bookworm)", "rocm_path": "/usr",
            "tools": {"cmake": "/usr/bin/cmake", "ninja": "/usr/bin/ninja", "c++": "/usr/bin/c++",
                      "hipcc": "/usr/bin/hipcc"},
            "hip_libs": {"hipblas": True, "rocblas": True}, "hip_version": [5, 2]}
    assert missing_tools(info, "rocm", FLAVOURS["mainline"]) == [HIP_TOO_OLD]
    assert missing_tools(info, "rocm", FLAVOURS["b6110"]) == [HIP_TOO_OLD]
    assert missing_tools(info, "rocm", FLAVOURS["ik"]) == []
    hint = install_hint(info, [HIP_TOO_OLD], FLAVOURS["mainline"])
    assert hint.startswith("mainline needs ROCm/HIP 6.1 or newer and the node has 5.2 (in /usr)")
    assert "sudo" not in hint  # nothing in Debian 12 brings it
    newer = {**info, "hip_version": [6, 4]}
    assert missing_tools(newer, "rocm", FLAVOURS["mainline"]) == []
