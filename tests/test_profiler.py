"""The profiler: the link test against iperf3 on shaped links and a delaying relay, and the
per-token breakdown, whose prediction for a slower link is held against a run on it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Static, Tabs

from rpctui.engine.sampling import Sampler
from rpctui.engine.servers import counted_argv
from rpctui.history import db
from rpctui.history.index import import_recordings
from rpctui.history.report import build_report, to_markdown
from rpctui.history.store import read_run
from rpctui.hosts.local import LocalHost
from rpctui.llama import logs
from rpctui.profiler.breakdown import predicted_ms
from rpctui.run import events as ev
from rpctui.run.state import fold_all
from rpctui.tui.app import RpcTuiApp
from tests.conftest import ROOT, needs_namespaces, recorded_events, rpctui, wait_until
from tests.rig import Rig, RigNode, node_toml

FIXTURES = Path(__file__).parent / "fixtures"


# -- fast: llama.cpp's lines the profiler reads --------------------------------------------------

def test_commands_are_counted_on_the_node() -> None:
    """A real GGML_RPC_DEBUG server log through the node's command counter: every command line
    is counted (not passed on), every other line is passed on, and the counts land in the file
    the sampler reads; the counter passes the program's exit code on and names itself."""
    log = FIXTURES / "mainline-rpc-server-debug.log"
    lines = log.read_text().splitlines()
    argv, counts = counted_argv(sys.executable,
                                ["sh", "-c", f"cat {log}; echo counted; sleep 30"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        passed = []
        for line in proc.stdout:
            if line == "counted\n":
                break
            passed.append(line.rstrip("\n"))
        time.sleep(0.2)  # the counter writes its counts after passing a chunk's lines on
        seq, commands, replies, to_bytes, from_bytes = struct.unpack(
            "<5q", Path(counts).read_bytes())
        comms = subprocess.run(["ps", "-o", "comm=", "-g", str(proc.pid)], capture_output=True,
                               text=True).stdout.split()
        sampled = asyncio.run(_sample_counts(proc.pid, counts))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    assert seq % 2 == 0 and "rpctui-count" in comms
    named = Counter(line[1:line.index("]")] for line in lines
                    if line.startswith("[") and line[1:line.index("]")] in logs.RPC_COMMANDS)
    assert passed == [line for line in lines if not (line.startswith("[") and line[1:line.index(
        "]")] in logs.RPC_COMMANDS)]
    assert "[~impl] closing socket 4" in passed and "Accepted client connection" in passed
    assert commands == sum(named.values())
    # tg8 x (2 repetitions + a 1-token warm-up) = 17 tokens: one graph each, and one answered
    # get_tensor each (the output), besides the pp test's.
    assert named["graph_recompute"] + named["graph_compute"] == 20 and named["get_tensor"] == 20
    assert replies == 20 + named["copy_tensor"] + named["set_tensor_hash"]
    sizes = [int(line.rsplit("size: ", 1)[1].split(",")[0]) for line in lines
             if line.startswith(("[set_tensor]", "[get_tensor]"))]
    assert to_bytes + from_bytes == sum(sizes) and from_bytes > 0 and to_bytes > 0
    # The node's sampler reads the same counts into its samples.
    assert sampled == (ev.RpcCounts("ep", commands, replies, to_bytes, from_bytes),)
    # The file goes with the counter; the program's exit code is the launcher's.
    for _ in range(50):
        if not Path(counts).exists():
            break
        time.sleep(0.05)
    assert not Path(counts).exists()
    argv, counts = counted_argv(sys.executable, ["sh", "-c", "echo last words >&2; exit 3"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert done.returncode == 3 and done.stdout == "last words\n"
    assert not Path(counts).exists()


async def _sample_counts(pgid: int, counts: str) -> tuple[ev.RpcCounts, ...]:
    got: list[ev.NodeSample] = []
    sampler = Sampler("here", LocalHost(), sys.executable, 5.0, got.append, time.monotonic)
    await sampler.start()
    try:
        await sampler.watch(pgid, "ep", 1, counts=counts)
        await sampler.sample_now(7)
        for _ in range(100):
            if any(7 in s.marks for s in got):
                break
            await asyncio.sleep(0.05)
    finally:
        await sampler.stop()
    return next(s.rpc for s in got if 7 in s.marks)


def test_bench_progress_lines() -> None:
    lines = (FIXTURES / "mainline-bench-progress.log").read_text().splitlines()
    parsed = [logs.bench_progress(line) for line in lines]
    assert all(parsed)
    assert [(p.test, p.what, p.rep) for p in parsed if p and p.rep] == [
        (1, "prompt run", 1), (1, "prompt run", 2), (2, "generation run", 1),
        (2, "generation run", 2)]
    assert logs.bench_progress("llama-bench: benchmark 2/2: depth run 1/3 (cached)") == \
        logs.BenchProgress(2, 2, "depth run", 1, 3)


# -- fast: a recorded run with a capped link -----------------------------------------------------

BREAKDOWN_RUN = FIXTURES / "rig3-breakdown.jsonl"


def test_recorded_breakdown_names_the_capped_link() -> None:
    """rig3-breakdown.jsonl (n3's link capped at 20 Mb/s): the link test flags n3, and the
    generation breakdown puts the time on n3's bandwidth, the logits it sends back."""
    state = fold_all(read_run(BREAKDOWN_RUN))
    assert set(state.links) == {"n2", "n3"}
    assert state.links["n3"].to_mbps is not None and state.links["n3"].to_mbps < 25
    assert [node for node, _ in state.link_flags] == ["n3"]
    tg = next(b for b in state.breakdowns if b.phase == "generation")
    assert tg.bottleneck == "bandwidth of the link to n3"
    n3 = next(p for p in tg.parts if p.node == "n3")
    assert n3.from_bytes > 10 * n3.to_bytes  # the output layer's logits come back from n3
    assert n3.round_trips == 1.0
    # The parts and the rest add up to what llama-bench measured: exactly while they fit in it
    # (the rest is the main node's), within the estimates' error when they overrun it (a
    # transfer is bytes over the link test's throughput; the rest is then 0).
    total = tg.main_ms + sum((p.compute_ms or 0) + (p.latency_ms or 0) + (p.transfer_ms or 0)
                             for p in tg.parts)
    assert total >= tg.ms_per_token - 0.01 and total <= tg.ms_per_token * 1.05
    assert tg.main_ms == 0 or abs(total - tg.ms_per_token) < 0.01
    # Given n3's link back at n2's speed, the breakdown predicts a much faster token.
    fast = predicted_ms(tg, {}, {"n3": (state.links["n2"].to_mbps or 0,
                                        state.links["n2"].from_mbps or 0)})
    assert fast is not None and n3.transfer_ms is not None
    assert fast < tg.ms_per_token - 0.9 * n3.transfer_ms


def test_recorded_breakdown_in_the_database_and_the_report(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "h.sqlite")
    import_recordings([BREAKDOWN_RUN], conn)
    run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
    parts = db.rows(conn, "breakdown", run_id)
    assert {(r["test"], r["node"]) for r in parts} == {("pp64", "n2"), ("pp64", "n3"),
                                                       ("tg32", "n2"), ("tg32", "n3")}
    links = {r["node"]: r for r in db.rows(conn, "links", run_id)}
    assert links["n3"]["flag"] and not links["n2"]["flag"]
    text = to_markdown(build_report(conn, [run_id]))
    assert "## where each token's time goes" in text and "bandwidth of the link to n3" in text
    assert "## links from the main node" in text


async def test_app_job_view_shows_links_and_breakdown(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    app = RpcTuiApp(replay=BREAKDOWN_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(160, 60)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("l")
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        text = str(app.job_view.query_one("#command", Static).render())
        assert "links from the main node:" in text and "flag: n3:" in text
        assert "tg32 (generation, 97 tokens measured)" in text
        assert "bottleneck: bandwidth of the link to n3" in text
        await pilot.press("q")


# -- rig: shaped links ---------------------------------------------------------------------------

class Relay:
    """tests/relay.py in the rig's root namespace, on the bridge address."""

    def __init__(self, rig: Rig, target: RigNode, delay_ms: float, ports: list[int]) -> None:
        self.address = f"10.{rig.net}.0.254"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.relay", self.address, target.address, str(delay_ms),
             *map(str, ports)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _iperf3(rig: Rig, client: RigNode, server: RigNode, reverse: bool) -> float:
    """iperf3's receiver-side Mb/s from ``client`` to ``server`` (-R: the other way)."""
    srv = subprocess.Popen(server.exec_argv(["iperf3", "-s", "-1", "-B", server.address, "-p",
                                             "5201"]), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        for _ in range(20):
            out = subprocess.run(client.exec_argv(
                ["iperf3", "-c", server.address, "-p", "5201", "-t", "2", "-J",
                 *(["-R"] if reverse else [])]), capture_output=True, text=True)
            with contextlib.suppress(ValueError, KeyError):
                data = json.loads(out.stdout)
                if out.returncode == 0 and "error" not in data:
                    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e6
            time.sleep(0.2)  # the server was not listening yet
        raise AssertionError(out.stdout + out.stderr)
    finally:
        srv.kill()
        srv.wait()


def _profile(rig: Rig, path: Path, bins: str, model: str, via_relay: dict[int, str],
             servers: list[int], job: str = "") -> Path:
    parts = ['name = "rig-profiler"', "breakdown = true", ""]
    for i, node in enumerate(rig.nodes[:max(servers) + 1]):
        srv: list[dict[str, object]] = [{"port": 50052, "threads": 1}] if i in servers else []
        if i in via_relay:
            srv = [{**s, "bind": "0.0.0.0"} for s in srv]
        text = node_toml(rig, node, name=f"n{i + 1}", main=i == 0, bin_dir=bins, servers=srv)
        if i in via_relay:
            text = text.replace(f'host = "{node.address}"',
                                f'host = "{node.address}"\naddress = "{via_relay[i]}"')
        parts.append(text)
    parts.append(job or f'[job]\nmodel = "{model}"\nngl = 99\n')
    path.write_text("\n".join(parts))
    return path


@pytest.fixture()
def shaped_rig(clean_rig: Rig) -> Iterator[Rig]:
    yield clean_rig
    for node in clean_rig.nodes:
        clean_rig.unshape(node)


@needs_namespaces
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is installed by scripts/setup all")
def test_links_agree_with_iperf3_and_the_added_delay(shaped_rig: Rig, bins, model,
                                                     tmp_path: Path) -> None:
    rig = shaped_rig
    n1, n2, n3, n4 = rig.nodes
    rig.shape(n3, "200mbit")
    relay = Relay(rig, n2, 10.0, [50052])
    try:
        profile = _profile(rig, tmp_path / "p.toml", bins["mainline"], model,
                           {1: relay.address}, servers=[1, 2, 3])
        result = rpctui(tmp_path, "links", str(profile), "--seconds", "2", "--format", "json")
    finally:
        relay.close()
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    links = {link["node"]: link for link in data["links"]}
    assert set(links) == {"n2", "n3", "n4"}
    iperf_to, iperf_from = _iperf3(rig, n1, n3, False), _iperf3(rig, n1, n3, True)
    print(f"n3 shaped to 200 Mb/s: rpctui {links['n3']['to_mbps']:.1f} / "
          f"{links['n3']['from_mbps']:.1f} Mb/s, iperf3 {iperf_to:.1f} / {iperf_from:.1f} Mb/s")
    assert abs(links["n3"]["to_mbps"] - iperf_to) <= 0.10 * iperf_to
    assert abs(links["n3"]["from_mbps"] - iperf_from) <= 0.10 * iperf_from
    # The relay adds 10 ms each way: the round trip grows by 20 ms over an unshaped peer's,
    # within 10 % (the relay's own threads add 0.3 to 0.9 ms: bench/profiler_accuracy.py).
    base = links["n4"]["rtt_min_ms"]
    print(f"n2 behind a 10 ms relay: rtt {links['n2']['rtt_ms']:.3f} ms, n4 {base:.3f} ms")
    assert abs(links["n2"]["rtt_ms"] - base - 20.0) <= 2.0
    assert links["n2"]["endpoint"] == f"{relay.address}:50052"
    assert links["n3"]["interface"] == "eth0" and links["n3"]["link_mbps"] == 10000
    assert links["n3"]["mtu"] == 1500
    flagged = {f["node"]: f["problem"] for f in data["flags"]}
    assert "under half its peers'" in flagged["n3"] and "round trip" in flagged["n2"]
    assert "n4" not in flagged
    # The Markdown table says the same.
    table = rpctui(tmp_path, "links", str(profile), "--seconds", "0")
    assert table.returncode == 1 and "link-test agent" not in table.stdout  # the relay is gone
    assert "| n3 " in table.stdout and "flag: n2: not measured" in table.stdout


def _tg(events: list[dict[str, object]]) -> ev.TokenBreakdown:
    found = [ev.from_dict(e) for e in events if e["type"] == "TokenBreakdown"]
    tg = [b for b in found if isinstance(b, ev.TokenBreakdown) and b.phase == "generation"]
    assert len(tg) == 1, found
    return tg[0]


@needs_namespaces
def test_breakdown_moves_time_to_a_slow_link_and_predicts_it(shaped_rig: Rig, bins, model,
                                                            tmp_path: Path) -> None:
    """Run once with n2 behind a relay that adds nothing, once behind one that adds 20 ms each
    way: the second run's time goes to that link, and the first run's breakdown, given the
    second run's measured round trip, predicts its time per token within 15 %. (What the model
    leaves out: on this 2-CPU machine every process that waited longer wakes up slower, 1 to 4
    ms per token in all, which put a 10 ms delay at the edge of 15 % once, in a busy run;
    bench/profiler_accuracy.py measures it at several delays.)"""
    rig = shaped_rig
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [16]\ngen_tokens = [48]\n'
           "repetitions = 3\n")
    runs = []
    for delay in (0.0, 20.0):
        relay = Relay(rig, rig.nodes[1], delay, [50052])
        out = tmp_path / f"delay{delay:g}"
        out.mkdir()
        try:
            profile = _profile(rig, out / "p.toml", bins["mainline"], model,
                               {1: relay.address}, servers=[1, 2], job=job)
            result = rpctui(out, "run", str(profile), "--format", "json")
        finally:
            relay.close()
        assert result.returncode == 0, result.stderr
        runs.append((recorded_events(out), result.stderr))
    base, slow = _tg(runs[0][0]), _tg(runs[1][0])
    parts = {p.node: p for p in slow.parts}
    assert set(parts) == {"n2", "n3"}
    assert parts["n2"].round_trips is not None and 0.9 <= parts["n2"].round_trips <= 1.2
    assert slow.bottleneck.startswith("latency of the link to n2")
    links = [ev.from_dict(e) for e in runs[1][0] if e["type"] == "LinkMeasured"]
    rtt = {link.node: link.rtt_ms for link in links if isinstance(link, ev.LinkMeasured)}
    predicted = predicted_ms(base, {"n2": rtt["n2"]})
    assert predicted is not None
    measured_change = slow.ms_per_token - base.ms_per_token
    predicted_change = predicted - base.ms_per_token
    print(f"tg: {base.ms_per_token:.3f} -> {slow.ms_per_token:.3f} ms per token; predicted "
          f"{predicted:.3f} (change {predicted_change:.3f} vs {measured_change:.3f} ms)")
    assert abs(predicted_change - measured_change) <= 0.15 * measured_change


def test_tune_benches_setups_that_fit_and_writes_the_winner(clean_rig: Rig, bins, model,
                                                            tmp_path: Path) -> None:
    rig = clean_rig
    job = f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [16]\ngen_tokens = [16]\n'
    profile = _profile(rig, tmp_path / "p.toml", bins["mainline"], model, {}, servers=[1, 2],
                       job=job)
    result = rpctui(tmp_path, "tune", str(profile), "--budget", "0.25", timeout=240)
    assert result.returncode == 0, result.stderr
    events = recorded_events(tmp_path)
    tuned = [ev.from_dict(e) for e in events if e["type"] == "TuneFinished"]
    assert len(tuned) == 1 and isinstance(tuned[0], ev.TuneFinished)
    t = tuned[0]
    finals = [s for s in t.setups if s.final]
    assert t.test == "tg16" and "as written" in [s.name for s in finals]
    assert t.winner == max(finals, key=lambda s: s.mean_ts).name
    assert all(s.samples >= 7 for s in finals)  # two in the first round, five more
    baseline = next(s for s in t.setups if s.name == "as written")
    winner = next(s for s in t.setups if s.name == t.winner)
    assert abs(t.margin - (winner.mean_ts / baseline.mean_ts - 1)) < 0.001
    # Every setup is a step of the one run, named; the steps match the setups benched.
    jobs = [e for e in events if e["type"] == "JobStarted"]
    assert len(jobs) == sum(len(s.steps) for s in t.setups)
    assert {j["setup"] for j in jobs} == {s.name for s in t.setups}
    one = [s for s in t.setups if s.n_servers == 1]
    if one:
        assert [n for n, _ in t.node_worth] == ["n3:50052"]
    written = tmp_path / "p.tuned.toml"
    assert t.written == str(written) and f"written to {written}" in result.stdout
    check = rpctui(tmp_path, "validate", str(written))
    assert check.returncode == 0, check.stderr
    assert 'name = "rig-profiler-tuned"' in written.read_text()
    assert "winner:" in result.stdout and "against the profile as written" in result.stdout


async def test_app_tests_links_live_and_shows_the_breakdown_after_a_run(bins, model) -> None:
    """The demo profile, live in the app: `t` runs the link test (the job tab shows the
    table), `r` the job, after which the job tab shows where each token's time went."""
    from rpctui.cli.main import _demo_profile

    app = RpcTuiApp(profile=dataclasses.replace(_demo_profile(None), breakdown=True), record=False)
    async with app.run_test(size=(160, 60)) as pilot:
        await wait_until(pilot, lambda: app.connected, steps=200)
        assert app.connected, "never connected"
        await pilot.press("t")
        await wait_until(pilot, lambda: app.state.links, steps=200)
        assert list(app.state.links) == ["local"]
        assert app.query_one(Tabs).active == "job-tab"
        await pilot.press("r")
        await wait_until(pilot, lambda: len(app.state.breakdowns) == 2, steps=600)
        assert [b.test for b in app.state.breakdowns] == ["pp64", "tg16"]
        app.redraw()
        await pilot.pause()
        text = str(app.job_view.query_one("#command", Static).render())
        assert "links from the main node:" in text and "| local | 127.0.0.1:50052 |" in text
        assert "tg16 (generation, 33 tokens measured)" in text
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.5)
    assert app.state.teardown == "done"


def test_tuner_candidates_margin_and_node_worth() -> None:
    """The tuner's choices from the planner's answers (here: everything fits, the planner
    suggests 1:3): the profile as written first, then one change, then two; a single server
    gets no split; the margin and what each server adds come from the repetitions."""
    from rpctui.profile.load import parse_profile
    from rpctui.profiler import tune

    profile = parse_profile(
        "[[nodes]]\nname = 'a'\nhost = 'local'\nmain = true\n"
        "[[nodes]]\nname = 'b'\nhost = 'h1'\n[[nodes.servers]]\nport = 1\nbind = '0.0.0.0'\n"
        "[[nodes]]\nname = 'c'\nhost = 'h2'\n[[nodes.servers]]\nport = 1\nbind = '0.0.0.0'\n"
        "[job]\nmodel = '/m'\nubatch_size = 512\n")
    seen: list[int] = []

    def fits(p):  # noqa: ANN001, ANN202 - the planner's answer, as the engine gives it
        seen.append(len(p.servers()))
        return True, [1.0, 3.0] if len(p.servers()) == 2 else [9.0]

    cands = tune.candidates(profile, fits, flash_attn=True)
    names = [c.name for c in cands]
    assert names[0] == "as written" and len(set(names)) == len(names)
    assert [len(c.changes) + (c.n_servers != 2) for c in cands] == sorted(
        len(c.changes) + (c.n_servers != 2) for c in cands)
    assert "split 1/3" in names and "split 1/1" in names and "ub 128" in names
    assert not any(c.n_servers == 1 and "split" in c.name for c in cands)
    assert set(seen) == {1, 2}
    base, best, one = (tune.Outcome(cands[0], [100.0, 102.0, 98.0]),
                       tune.Outcome(cands[1], [120.0, 121.0, 119.0]),
                       tune.Outcome(next(c for c in cands if c.name == "1 server"), [110.0]))
    gain, noise = tune.margin(best, base)
    assert abs(gain - 0.2) < 1e-9 and 0 < noise < 0.02
    assert tune.ranked([base, best, one])[0] is best
    assert tune.node_worth([base, one], ["b:1", "c:1"]) == [("c:1", -10.0)]
