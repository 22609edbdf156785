"""Live telemetry on real nodes: samples, network counters, load progress, OOM warnings."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpctui.engine.sampling import Sampler
from rpctui.hosts.local import LocalHost
from rpctui.hosts.ssh import connect
from rpctui.profile.schema import Node
from rpctui.run import events as ev
from tests.conftest import recorded_events, rig_profile, rpctui
from tests.rig import Rig

MIB = 1024 * 1024


def _rig_node(rig: Rig, i: int) -> Node:
    n = rig.nodes[i]
    return Node(host=n.address, name=f"n{i + 1}", user="root", ssh_port=n.ssh_port,
                key=str(rig.client_key), known_hosts=str(rig.known_hosts),
                python="/usr/bin/python3")


def test_network_counters_see_traffic_sent_to_one_node(clean_rig: Rig) -> None:
    """20 MB sent to node 2: its sampler counts them, node 3's does not."""
    target = clean_rig.nodes[1]
    sink = subprocess.Popen(target.exec_argv([
        sys.executable, "-c",
        f"import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(('{target.address}',50999));s.listen();print('up',flush=True);c,_=s.accept();"
        f"n=0\nwhile (d:=c.recv(1<<16)):n+=len(d)\nprint(n,flush=True)"]),
        stdout=subprocess.PIPE, text=True)
    payload = 20 * 1000 * 1000

    async def go() -> dict[str, list[ev.NodeSample]]:
        samples: dict[str, list[ev.NodeSample]] = {"n2": [], "n3": []}
        samplers = []
        for i in (1, 2):
            node = _rig_node(clean_rig, i)
            host = await connect(node)
            s = Sampler(node.label, host, node.python, 0.2,
                        lambda e: samples[e.node].append(e), time.monotonic)
            await s.start()
            samplers.append((s, host))
        await asyncio.sleep(0.5)
        with socket.create_connection((target.address, 50999)) as conn:
            conn.sendall(b"x" * payload)
        await asyncio.sleep(0.6)
        for s, host in samplers:
            await s.stop()
            await host.close()
        return samples

    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "up"
        samples = asyncio.run(go())
        assert int(sink.stdout.readline()) == payload
    finally:
        sink.kill()
        sink.wait()

    def rx_delta(node: str) -> int:
        first = dict((n, rx) for n, rx, _ in samples[node][0].net)
        last = dict((n, rx) for n, rx, _ in samples[node][-1].net)
        return last["eth0"] - first["eth0"]

    # eth0 counts frames: 66 bytes of Ethernet, IP and TCP headers (with timestamps) per 1448
    # of payload is 4.6 % already, and the samplers' own SSH sessions add theirs (a full suite
    # beside it once made it 6.3 %)
    assert payload <= rx_delta("n2") <= payload * 1.10
    assert rx_delta("n3") < 100_000
    # Every sample carries the node's memory; none of these nodes has a GPU.
    assert all(s.mem_total_mib and s.mem_available_mib for s in samples["n2"])


def test_amd_sysfs_reader_on_the_kernel_layout(tmp_path: Path) -> None:
    """No AMD hardware here: a directory laid out as the amdgpu driver lays out sysfs."""
    files = {
        "card0/device/mem_info_vram_total": 536870912, "card0/device/mem_info_vram_used": 268435456,
        "card0/device/mem_info_gtt_total": 120259084288, "card0/device/mem_info_gtt_used": 64424509440,
        "card0/device/gpu_busy_percent": 37, "card0/device/product_name": "AMD Radeon 8060S",
        "card1/device/vendor": "0x10de",  # a non-amdgpu card: no mem_info files, skipped
    }
    for rel, value in files.items():
        path = tmp_path / "class" / "drm" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    (tmp_path / "class" / "drm" / "card0-DP-1").mkdir()  # connectors are not cards

    async def go() -> ev.NodeSample:
        got: list[ev.NodeSample] = []
        s = Sampler("here", LocalHost(), sys.executable, 0.1, got.append, time.monotonic,
                    sysfs=str(tmp_path))
        await s.start()
        while not got:
            await asyncio.sleep(0.05)
        await s.stop()
        return got[0]

    sample = asyncio.run(go())
    assert sample.gpus == (("AMD Radeon 8060S", "amd", 256.0, 512.0, 61440.0, 114688.0, 37),)


@pytest.mark.parametrize("servers", [2, 4])
def test_load_progress_reaches_100_and_memory_is_sampled(clean_rig: Rig, bins, model,
                                                         tmp_path: Path, servers: int) -> None:
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [256]\ngen_tokens = [32]\n'
           f'repetitions = 3\n')  # long enough (about 1 s) for a few samples with weights loaded
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=servers, extra="sample_interval_s = 0.2", job=job)
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 0, result.stderr
    events = recorded_events(tmp_path)
    expected = {e["endpoint"]: e["mib"] for e in events
                if e["type"] == "BufferAllocated" and e["kind"] == "model" and e["endpoint"]}
    assert len(expected) == servers
    finals = {e["endpoint"]: e for e in events if e["type"] == "LoadProgress" and e["endpoint"]
              and e["percent"] == 100.0}
    assert set(finals) == set(expected)
    finished = {e["endpoint"]: e for e in events if e["type"] == "LoadFinished"}
    assert set(finished) == set(expected)
    for ep, mib in expected.items():
        # The kernel's per-connection counters saw at least the weights cross the network.
        assert finished[ep]["moved_bytes"] >= mib * MIB * 0.97, (ep, finished[ep])
        assert finished[ep]["seconds"] > 0
    # Each server's resident memory was sampled and holds at least its weights.
    rss = {}
    for e in events:
        if e["type"] == "NodeSample":
            for proc in e["procs"]:  # endpoint, rss MiB, cpu s, busiest thread s
                rss[proc[0]] = max(rss.get(proc[0], 0), proc[1])
    for ep, mib in expected.items():
        assert rss[ep] >= mib, (ep, rss)
    dist = [e for e in events if e["type"] == "MemoryDistribution"]
    assert dist and {row[1] for row in dist[0]["rows"]} >= {f"RPC0[{ep}]" for ep in expected}
    assert "memory distribution" in result.stderr and "peak memory per node" in result.stderr
    assert "load time per server" in result.stderr


def test_warm_tensor_cache_moves_less_and_still_finishes(clean_rig: Rig, bins, model,
                                                         tmp_path: Path) -> None:
    cache = tmp_path / "rpc-cache"
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, extra="sample_interval_s = 0.2",
                          server_extra={"cache": True, "env": {"LLAMA_CACHE": str(cache)}})
    runs = []
    for _ in range(2):
        result = rpctui(tmp_path, "run", str(profile))
        assert result.returncode == 0, result.stderr
        runs.append(recorded_events(tmp_path))
    last = f"{clean_rig.nodes[1].address}:50052"
    moved = [next(e["moved_bytes"] for e in events if e["type"] == "LoadFinished"
                  and e["endpoint"] == last) for events in runs]
    # The output tensor (16 MB, over the 10 MiB cache limit) lives on the last server:
    # the warm run sends its hash instead of its bytes.
    assert moved[1] < moved[0] - 10 * MIB, moved
    for events in runs:
        done = [e for e in events if e["type"] == "LoadProgress" and e["endpoint"] == last]
        assert done[-1]["percent"] == 100.0
    cached = [dict(e["cache"]).get(last) for e in runs[1] if e["type"] == "NodeSample"]
    assert any(c and c > 10 * MIB for c in cached), "the cache directory was not sampled"
    assert any(f.stat().st_size > 10 * MIB for f in cache.rglob("*") if f.is_file())
    # Each run's report of what the load found there: nothing, then the output tensor.
    found = [[(e["found"], e["weights"]) for e in events if e["type"] == "CacheUsed"
              and e["endpoints"] == [last]] for events in runs]
    assert found == [[(0, 1)], [(1, 1)]], found
    # The run database says which run found the cache cold and which found it warm.
    import sqlite3

    db = sqlite3.connect(tmp_path / "data" / "rpctui" / "history.sqlite")
    states = db.execute("SELECT r.started, s.cache_state FROM servers s JOIN runs r USING (run_id)"
                        " WHERE s.endpoint = ? ORDER BY r.started, r.run_id", (last,)).fetchall()
    assert [state for _, state in states] == ["cold", "warm"]


def test_live_and_predicted_oom_warnings_name_the_node(clean_rig: Rig, bins, model,
                                                       tmp_path: Path) -> None:
    # A threshold of 1 % of RAM is passed at once; a headroom of 10^9 MiB never fits.
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, extra="sample_interval_s = 0.2\nwarn_memory_pct = 1\n"
                                           "headroom_mib = 1000000000")
    refused = rpctui(tmp_path, "run", str(profile))
    assert refused.returncode == 3 and "the memory plan does not fit" in refused.stderr
    result = rpctui(tmp_path, "run", str(profile), "--force")
    assert result.returncode == 0, result.stderr
    risks = [e for e in recorded_events(tmp_path) if e["type"] == "OomRisk"]
    kinds = {(e["node"], e["kind"]) for e in risks}
    assert {("n1", "threshold"), ("n2", "threshold"), ("n1", "predicted"),
            ("n2", "predicted")} <= kinds
    assert "warning: node n2 is about to receive" in result.stderr
    assert "warning: node n1 is at" in result.stderr
    # One warning per node and kind, not one per sample.
    assert len(risks) == len(kinds)


def _cgroup_v1_memory() -> Path | None:
    root = Path("/sys/fs/cgroup/memory")
    return root if (root / "cgroup.procs").exists() else None


@pytest.mark.skipif(_cgroup_v1_memory() is None, reason="needs the cgroup v1 memory controller")
def test_kernel_oom_killer_is_named(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    """A real kill by the kernel: node 2's sshd (and so everything started there) goes into a
    memory cgroup too small for the weights; the kernel's OOM killer ends the server."""
    node = clean_rig.nodes[1]
    assert node.sshd is not None
    home = Path(f"/proc/{node.sshd.pid}/cgroup").read_text()
    original = next(line.split(":", 2)[2] for line in home.splitlines() if ":memory:" in line)
    group = _cgroup_v1_memory() / f"rpctui-oom-{node.index}"
    group.mkdir(exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(30 * MIB))
    (group / "cgroup.procs").write_text(str(node.sshd.pid))
    try:
        job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\ngen_tokens = [8]\n'
               f'repetitions = 1\n')
        profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                              model=model, servers=2, job=job)
        result = rpctui(tmp_path, "run", str(profile))
    finally:
        (_cgroup_v1_memory() / original.strip("/") / "cgroup.procs").write_text(
            str(node.sshd.pid))
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert result.returncode == 1, result.stderr
    assert f"server {node.address}:50052 on node n2 was killed" in result.stderr
    assert ("was killed by the kernel's OOM killer on n2 (kernel log: " in result.stderr
            and "Killed process" in result.stderr)


def test_netlink_tcp_counters_agree_with_ss() -> None:
    """The sampler asks the kernel over NETLINK_SOCK_DIAG what `ss -tin` prints: bytes
    received, and bytes sent and acknowledged."""
    agent = (Path(__file__).resolve().parent.parent / "rpctui" / "hosts" / "agents" / "sampler.py")
    ns: dict[str, object] = {"CONFIG": {}}
    exec(compile(agent.read_text().rsplit("\nmain()", 1)[0], "agent", "exec"), ns)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    try:
        client.sendall(b"x" * 3_000_000)
        got = 0
        while got < 3_000_000:
            got += len(conn.recv(1 << 20))
        conn.sendall(b"y" * 12_345)
        got = 0
        while got < 12_345:
            got += len(client.recv(1 << 20))
        deadline = time.monotonic() + 2
        while True:  # the client's acknowledgement may be delayed (up to 40 ms on Linux)
            netlink = ns["diag_received"]({port})
            ss = ns["ss_received"]({port})
            if list(netlink.values()) == [(3_000_000, 12_345)] or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        for s in (client, conn, server):
            s.close()
    assert netlink == ss
    assert list(netlink.values()) == [(3_000_000, 12_345)]


def test_recorded_gpu_run_replays_with_vram_and_per_process_memory() -> None:
    """The recording of a real run on an H100 (bench/device_check.sh) folds into the state."""
    from rpctui.history.store import read_run
    from rpctui.run.state import fold_all

    state = fold_all(read_run(Path(__file__).parent / "fixtures" /
                              "run-h100-two-cuda-servers.jsonl"))
    tel = state.telemetry["gpu"]
    assert tel.sample is not None and tel.sample.gpus[0][0] == "NVIDIA H100 80GB HBM3"
    assert tel.peak_gpu_mib > 1000
    peak: dict[str, float] = {}
    for e in read_run(Path(__file__).parent / "fixtures" / "run-h100-two-cuda-servers.jsonl"):
        if isinstance(e, ev.NodeSample):
            for ep, mib in e.gpu_procs:
                peak[ep] = max(peak.get(ep, 0.0), mib)
    # NVML's per-process memory: the CUDA context plus buffers of each rpc-server.
    assert peak == {"127.0.0.1:50052": 650.0, "127.0.0.1:50053": 650.0}
    assert {lf.endpoint for lf in state.loads_finished} == {"127.0.0.1:50052", "127.0.0.1:50053"}
    assert state.exit_code == 0


def test_a_node_that_drops_off_the_network_is_noticed_within_seconds(clean_rig: Rig) -> None:
    """SSH keepalives: with the node's link down nothing answers, and the connection is given
    up after KEEPALIVE_MISSES unanswered keepalives, keepalive_s apart (3 s by default, 12 s
    to notice as docs/PERFORMANCE.md measured; 1 s here), not after TCP's minutes."""
    from rpctui.hosts.ssh import KEEPALIVE_MISSES

    node = clean_rig.nodes[3]
    link = f"{clean_rig.prefix}v{node.index}"
    assert _rig_node(clean_rig, 3).keepalive_s == 3.0  # the default
    rig_node = dataclasses.replace(_rig_node(clean_rig, 3), keepalive_s=1.0)

    async def go() -> float:
        host = await connect(rig_node)
        assert (await host.run(["true"])).rc == 0
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        start = time.monotonic()
        assert "keepalives for 3 s" in await asyncio.wait_for(host.wait_lost(), 60)
        return time.monotonic() - start

    try:
        took = asyncio.run(go())
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    print(f"dead link noticed after {took:.1f} s")
    assert took <= rig_node.keepalive_s * (KEEPALIVE_MISSES + 1) + 3, took
