"""`rpctui explain` on the seeds' logs and on logs captured from every build the tests have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rpctui.llama.explain import Explanation, explain_text, render
from tests.conftest import rpctui

FIX = Path(__file__).parent / "fixtures"


def explain(*names: str) -> Explanation:
    x = Explanation()
    for name in names:
        explain_text((FIX / name).read_text(), name, x)
    return x


def test_seed_scaling_log_build_backend_and_results() -> None:
    x = explain("seed000-scaling-1.log")
    assert x.build == "9515c613 (6097)"
    assert "Vulkan" in x.backends and "Vulkan0: Radeon 8060S Graphics (AMD open-source driver)" in x.devices
    assert [(r["test"], r["t/s"]) for r in x.bench] == [("pp512", "404.67 ± 3.65"),
                                                         ("tg128", "33.50 ± 0.03")]
    assert x.diagnosis == ""


def test_seed_vulkan_deepseek_distribution_is_uneven() -> None:
    x = explain("seed000-deepseek-vulkan.log")
    dist = {d: m for d, m, _ in x.distribution()}
    assert dist["Vulkan0"] == 37403.07 and dist["RPC[192.168.128.13:50053]"] == 62352.75
    assert x.layers == "62/62" and x.rpc_servers[0] == "192.168.128.13:50053"
    assert "memory distribution: RPC[192.168.128.13:50053]: 62353 M" in render(x)


def test_seed_hsa_abort_is_diagnosed_on_the_rocm_device() -> None:
    x = explain("seed000-qwen3-hsa-abort.log")
    assert x.diagnosis == "the ROCm runtime aborted (HSA exception)"
    assert x.responsible == "ROCm0"
    assert x.load_mode == "no mmap (from the command line)"
    assert x.buffers["ROCm0"]["compute"] == 308.75


def test_seed_rpc_server_banner() -> None:
    x = explain("seed000-rpc-server-banner.log")
    assert x.server["protocol"] == "2.0.0" and x.server["endpoint"] == "0.0.0.0:50053"
    assert x.server["cache"] == "/home/lhl/.cache/llama.cpp/rpc/"
    assert x.server["exposed"].startswith("yes")


def test_captured_logs_of_every_build() -> None:
    mainline = explain("mainline-bench-2srv-v.log", "mainline-bench-2srv.jsonl")
    assert mainline.buffers["RPC0[127.0.0.1:50053]"]["model"] == 20.13
    assert [r["test"] for r in mainline.bench] == ["pp32", "tg8"]
    assert mainline.load_mode == "mmap"
    seed = explain("b6110-bench-2srv-v.log", "b6110-bench-2srv.json")
    assert seed.buffers["RPC[127.0.0.1:50062]"]["model"] == 7.51 and seed.backends == ["RPC"]
    assert [r["test"] for r in seed.bench] == ["pp32", "tg8"]
    ik = explain("ik-bench-2srv-v.log", "ik-bench-2srv.json", "ik-rpc-server.log")
    assert ik.buffers["RPC0[127.0.0.1:50072]"]["model"] == 15.63
    assert ik.server["protocol"] == "3.5.2" and "CPU (24105 MiB)" in ik.devices
    assert [r["test"] for r in ik.bench] == ["pp32", "tg8"]
    for x in (mainline, seed, ik):
        assert x.diagnosis == "", x.failures


def test_real_out_of_memory_names_the_server() -> None:
    x = explain("mainline-bench-oom-v.log")
    assert x.responsible == "127.0.0.1:50083"
    assert x.diagnosis.startswith("could not allocate 20.13 MiB (21109760 bytes) on "
                                  "RPC0[127.0.0.1:50083]: that server ran out of memory")
    server = explain("mainline-rpc-server-oom.log")
    assert server.diagnosis == "a CPU backend could not allocate 20.13 MB"


def test_real_protocol_mismatch_from_both_sides() -> None:
    client = explain("mismatch-b6110-client-v.log")
    assert client.diagnosis == "a server crashed or was killed during the job"
    both = explain("mismatch-b6110-client-v.log", "mismatch-current-server.log")
    assert both.diagnosis == "the client and server builds speak different RPC protocols"


def test_explain_command_text_and_json(tmp_path: Path) -> None:
    result = rpctui(tmp_path, "explain", str(FIX / "seed000-deepseek-hip.log"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["build"] == "9a963895 (6110)"
    assert data["distribution"][0] == {"device": "RPC[192.168.128.13:50054]", "mib": 58684.95,
                                       "share": 0.2716}
    text = rpctui(tmp_path, "explain", str(FIX / "mainline-bench-oom-v.log"))
    assert "diagnosis: could not allocate" in text.stdout and "(responsible: 127.0.0.1:50083)" in text.stdout
    missing = rpctui(tmp_path, "explain", str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and "cannot read log" in missing.stderr


def test_sliding_window_kv_buffers_add_up_per_device() -> None:
    """A sliding-window model: one server holds both KV caches (issue 9: only one was shown)."""
    x = explain("mainline-bench-swa-2srv-v.log")
    assert x.buffers["RPC0[127.0.0.1:50153]"]["kv"] == 0.12 + 0.25
    assert x.buffers["RPC0[127.0.0.1:50152]"]["kv"] == 0.62
    from rpctui.llama.logs import BufferLines

    reader = BufferLines()
    kv = [(b.device, b.cache, b.mib) for b in map(reader.feed, (FIX / "mainline-bench-swa-2srv-v.log")
                                                    .read_text().splitlines()) if b and b.kind == "kv"]
    assert kv[:3] == [("RPC0[127.0.0.1:50153]", "non-SWA", 0.12),
                      ("RPC0[127.0.0.1:50152]", "SWA", 0.62), ("RPC0[127.0.0.1:50153]", "SWA", 0.25)]


def test_recurrent_state_counts_with_the_kv() -> None:
    """A Mamba-2/attention hybrid and a Mamba-2 model (issue 15): each server's RS buffer (the
    recurrent layers' state) is counted in its KV, beside the attention layers' KV cache."""
    x = explain("mainline-bench-granite-hybrid-2srv-v.log")
    assert x.buffers["RPC0[127.0.0.1:50152]"]["kv"] == pytest.approx(0.12 + 1.04)
    assert x.buffers["RPC0[127.0.0.1:50153]"]["kv"] == pytest.approx(0.12 + 0.52)
    from rpctui.llama.logs import BufferLines

    reader = BufferLines()
    lines = (FIX / "b6110-bench-mamba2-2srv-v.log").read_text().splitlines()
    kv = [(b.device, b.cache, b.mib) for b in map(reader.feed, lines) if b and b.kind == "kv"]
    assert kv[:2] == [("RPC[127.0.0.1:50152]", "RS", 0.66), ("RPC[127.0.0.1:50153]", "RS", 0.40)]
    assert explain("b6110-bench-mamba2-2srv-v.log").buffers["RPC[127.0.0.1:50153]"]["kv"] == 0.40


def test_cuda_out_of_memory_names_device_and_size() -> None:
    """Real CUDA OOMs on an H200 (issue 9: the diagnosis said only "a CUDA device ran out of
    memory"): device, MiB and bytes, and the endpoint when the GPU is a server's."""
    client = explain("cuda-oom-client-v.log")
    assert client.diagnosis == ("could not allocate 27.66 MiB (29002752 bytes) on CUDA0: that "
                                "device ran out of memory")
    assert client.responsible == "CUDA0"
    assert any("cudaMalloc: out of memory" in f["message"] for f in client.failures)
    via_rpc = explain("cuda-oom-rpc-client-v.log")
    assert via_rpc.diagnosis.startswith("could not allocate 27.66 MiB (29002752 bytes) on "
                                        "RPC0[127.0.0.1:50052]")
    assert via_rpc.responsible == "127.0.0.1:50052"
    server = explain("cuda-oom-rpc-server.log")
    assert server.diagnosis == ("could not allocate 27.66 MiB on GPU device 0: that device ran "
                                "out of memory (cudaMalloc: out of memory)")


def test_repeated_failures_are_listed_once_with_a_count() -> None:
    twice = explain("cuda-oom-client-v.log", "cuda-oom-client-v.log")
    messages = [f["message"] for f in twice.failures]
    assert len(messages) == len(set(messages)) == len(explain("cuda-oom-client-v.log").failures)
    assert {f["count"] for f in twice.failures} == {2}
    assert "(2 times)" in render(twice)
