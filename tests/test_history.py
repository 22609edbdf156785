"""The run database: llama-bench's own table, the cluster facts beside it, `rpctui history`,
and llama.cpp's compare-llama-bench.py reading what rpctui wrote. Runs are real recordings
(tests/fixtures) and, in the rig tier, runs made here with the real builds."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rpctui.history import db
from rpctui.history.index import import_recordings
from rpctui.history.store import read_run
from rpctui.history.summary import summarize
from rpctui.llama.build import FLAVOURS
from rpctui.paths import cache_dir
from rpctui.run import events as ev
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures"
RIG32 = FIXTURES / "rig32-2hz.jsonl"
RIG4 = FIXTURES / "rig4-midload-warning.jsonl"
H100 = FIXTURES / "run-h100-two-cuda-servers.jsonl"


@pytest.fixture()
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory holding the three real recordings, and one cut short as a crash
    leaves it (the rig4 run without its last events)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = tmp_path / "data" / "rpctui" / "runs"
    folder.mkdir(parents=True)
    for path in (RIG32, RIG4, H100):
        (folder / path.name).write_text(path.read_text())
    lines = RIG4.read_text().splitlines()
    cut = [line for line in lines if '"RunFinished"' not in line][: len(lines) // 2]
    (folder / "rig4-crashed.jsonl").write_text(
        "\n".join(cut).replace("20261122-051636-rig-60403", "20261122-051636-rig-crashed") + "\n")
    return folder


def _cli(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rpctui.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, "XDG_DATA_HOME": str(env_home)})


def test_llama_bench_table_is_the_one_llama_bench_creates() -> None:
    """Column for column and type for type, the CREATE TABLE of `llama-bench -o sql` from the
    pinned mainline; and that build's own INSERT statements run against rpctui's table."""
    sql = (FIXTURES / "mainline-bench-sql.txt").read_text()
    create = sql[sql.index("CREATE TABLE"):sql.index(");") + 2]
    columns = re.findall(r"^\s+(\w+) (\w+),?$", create, re.M)
    assert tuple(columns) == db.LLAMA_BENCH_COLUMNS
    conn = sqlite3.connect(":memory:")
    conn.executescript(db.SCHEMA)
    for insert in re.findall(r"^INSERT INTO llama_bench .*;$", sql, re.M):
        conn.execute(insert)
    assert conn.execute("SELECT COUNT(*), MIN(n_prompt), MAX(n_gen) FROM llama_bench").fetchone() \
        == (2, 0, 4)


def test_a_run_is_summed_up_from_its_events() -> None:
    rec = summarize(read_run(RIG4), "rig4.jsonl")
    assert rec.run["n_nodes"] == 4 and rec.run["n_servers"] == 4 and rec.run["status"] == "ok"
    assert rec.run["model"] == "tiny-llama-16L-512e-1536f-8h-4kv-s42.gguf"
    results = [e for e in read_run(RIG4) if isinstance(e, ev.BenchResult)]
    pp = next(r.row["avg_ts"] for r in results if r.row["n_gen"] == 0)
    assert rec.run["pp_ts"] == pp
    assert [(b["test"], b["n_servers"], b["nodes"]) for _, b in rec.bench] == [
        ("pp128", 4, "n1,n2,n3,n4"), ("tg32", 4, "n1,n2,n3,n4")]
    servers = {s["endpoint"]: s for s in rec.servers}
    assert servers["10.215.0.4:50052"]["bind"] == "10.215.0.4"
    assert servers["10.215.0.4:50052"]["port"] == 50052 and servers["10.215.0.4:50052"]["cache"] == 0
    assert all(s["load_s"] and s["load_bytes"] for s in rec.servers)
    assert [p["kind"] for p in rec.problems] == ["oom-predicted"]
    assert {m["device"] for m in rec.memory} == {"RAM"}
    assert rec.plan and {p["device"] for p in rec.plan} >= {"RPC0[10.215.0.1:50052]"}
    gpu = summarize(read_run(H100))
    assert any(m["device"].startswith("VRAM NVIDIA H100") for m in gpu.memory)


def test_recordings_import_once_and_a_crashed_run_reads_as_interrupted(runs: Path) -> None:
    done = import_recordings()
    assert len(done) == 4
    conn = db.connect()
    status = {r["run_id"]: r["status"] for r in conn.execute("SELECT run_id, status FROM runs")}
    assert status["20261122-051636-rig-crashed"] == "interrupted"
    assert list(status.values()).count("ok") == 3
    counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("llama_bench", "bench", "servers", "nodes")]
    # Nothing new: nothing imported. The interrupted run is read again once its recording
    # grows (a run still going on elsewhere); writing a run again replaces it.
    assert import_recordings() == []
    with (runs / "rig4-crashed.jsonl").open("a") as fh:
        fh.write(RIG4.read_text().splitlines()[-1].replace("20261122-051636-rig-60403",
                                                           "20261122-051636-rig-crashed") + "\n")
    assert import_recordings() == ["20261122-051636-rig-crashed"]
    assert import_recordings(sorted(runs.glob("*.jsonl")), only_new=False)
    assert counts == [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                      for t in ("llama_bench", "bench", "servers", "nodes")]


def test_a_write_that_fails_midway_leaves_the_database_as_it_was(runs: Path) -> None:
    conn = db.connect()
    rec = summarize(read_run(RIG4), "rig4.jsonl")
    db.write_run(conn, rec)
    before = conn.execute("SELECT COUNT(*) FROM llama_bench").fetchone()[0]
    rec.bench.append(({"avg_ts": 1.0}, {"no_such_column": 1}))  # fails after the other rows
    with pytest.raises(sqlite3.OperationalError):
        db.write_run(conn, rec)
    assert conn.execute("SELECT COUNT(*) FROM llama_bench").fetchone()[0] == before
    assert conn.execute("SELECT status FROM runs").fetchone()[0] == "ok"


def test_history_lists_filters_shows_and_exports(runs: Path, tmp_path: Path) -> None:
    home = tmp_path / "data"
    listed = _cli("history", env_home=home)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "when", "(UTC)", "profile"]
    assert len(lines) == 5
    assert "2026-11-22 05:16" in listed.stdout and "cuda-two-servers" in listed.stdout
    assert "interrupted" in listed.stdout and "tiny-llama-16L-512e-1536f-8h-4kv-s42.gguf" in listed.stdout
    four = _cli("history", "--nodes", "2-8", "--status", "ok", "--format", "json", env_home=home)
    assert [r["run_id"] for r in json.loads(four.stdout)] == ["20261122-051636-rig-60403"]
    assert _cli("history", "--since", "2026-11-22T05:00", "--format", "csv",
                env_home=home).stdout.count("\n") == 4  # the header and the three rig runs
    shown = _cli("history", "show", "cuda-two", env_home=home)
    assert shown.returncode == 0, shown.stderr
    assert "NVIDIA H100 80GB HBM3" in shown.stdout and "pp512" in shown.stdout
    assert "127.0.0.1:50053" in shown.stdout
    exported = _cli("history", "export", "--format", "csv", env_home=home)
    rows = exported.stdout.splitlines()
    assert len(rows) == 1 + 2 + 2 + 2 + 1  # header, two results a run, the crashed run's row
    elsewhere = tmp_path / "from-another-machine.jsonl"
    elsewhere.write_text(H100.read_text().replace("20261122-044200-cuda-two-servers-38282",
                                                  "20261122-044200-cuda-copied"))
    imported = _cli("history", "import", str(elsewhere), env_home=home)
    assert imported.returncode == 0 and "1 run(s) imported" in imported.stderr
    # A recording in a newer rpctui's format is passed over, and the rest is listed.
    lines = H100.read_text().splitlines()
    first = json.loads(lines[0])
    first.update(schema=99, run_id="from-a-newer-rpctui")
    (runs / "newer.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert _cli("history", env_home=home).stdout.count("\n") == 6
    newer = _cli("history", "import", str(runs / "newer.jsonl"), env_home=home)
    assert newer.returncode == 0 and "0 run(s) imported" in newer.stderr
    assert "not imported: " in newer.stderr and "newer" in newer.stderr
    assert "20261122-044200-cuda-copied" in _cli("history", env_home=home).stdout
    for bad, why in ((("history", "show", "nothing-like-it"), "no run in the history matches"),
                     (("history", "--nodes", "four"), "is not a count or a range"),
                     (("history", "show", "rig"), "runs match"),
                     (("history", "import", str(tmp_path / "nope.jsonl")), "no recording at")):
        out = _cli(*bad, env_home=home)
        assert out.returncode != 0 and why in out.stderr and "fix:" in out.stderr


@pytest.mark.rig
def test_compare_llama_bench_reads_the_database_of_a_real_run(tmp_path: Path, bins, model) -> None:
    """A real run on this machine (the demo: two rpc-servers, llama-bench, mainline) goes into
    the database as it ends; llama.cpp's own compare script reads that database unchanged."""
    home = tmp_path / "data"
    demo = _cli("demo", "--headless", env_home=home)
    assert demo.returncode == 0, demo.stderr
    conn = sqlite3.connect(home / "rpctui" / "history.sqlite")
    commit = conn.execute("SELECT DISTINCT build_commit FROM llama_bench").fetchone()[0]
    assert commit == FLAVOURS["mainline"].build_commit
    bins["mainline"]  # the pinned source is unpacked with the build
    script = (cache_dir() / "src" / FLAVOURS["mainline"].sdist_stem / FLAVOURS["mainline"].vendor
              / "scripts" / "compare-llama-bench.py")
    out = subprocess.run([sys.executable, str(script), "-i", str(home / "rpctui" / "history.sqlite"),
                          "-b", commit, "-c", commit], cwd=tmp_path, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    table = out.stdout.splitlines()
    assert table[0].startswith("|") and f"t/s {commit}" in table[0] and "Speedup" in table[0]
    assert any("pp" in line and "1.00" in line for line in table[2:])
    assert any("tg" in line and "1.00" in line for line in table[2:])


def test_compare_sets_runs_side_by_side_and_says_what_differs(runs: Path, tmp_path: Path) -> None:
    home = tmp_path / "data"
    out = _cli("compare", "rig-60403", "rig-48525", env_home=home)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "A: 20261122-051636-rig-60403" in text and "B: 20261122-051643-rig-48525" in text
    assert re.search(r"pp128 t/s\s+544\.52 ± 55\.07 \(3\)", text)  # the three repetitions
    assert re.search(r"pp512 t/s\s+-\s+3542\.24 ± 210\.41 \(10\)", text)
    assert "B against A: 4 things differ (job flags, model, nodes, servers)" in text
    assert "job flags: -p: 128 -> 512" in text and "nodes: n5 added" in text
    for bad, why in ((("compare", "rig-60403"), "compare needs two runs or more"),
                     (("compare", "rig-60403:7", "cuda"), "has no step 7"),
                     (("compare", "rig-60403", "nothing-like-it"), "no run in the history")):
        out = _cli(*bad, env_home=home)
        assert out.returncode != 0 and why in out.stderr and "fix:" in out.stderr


def test_a_change_is_weighed_against_the_runs_own_spread() -> None:
    from rpctui.history.compare import verdict

    rig32 = [e.row for e in read_run(RIG32) if isinstance(e, ev.BenchResult)]
    h100 = [e.row for e in read_run(H100) if isinstance(e, ev.BenchResult)]
    tg_rig, tg_h100 = (next(r["samples_ts"] for r in rows if r["n_gen"]) for rows in (rig32, h100))
    assert verdict(tg_rig, tg_h100) == "beyond noise"  # 121 against 769 t/s
    assert verdict(tg_rig, tg_rig[::-1]) == "within noise"
    assert verdict(tg_rig[:1], tg_h100) == "one sample: cannot tell"


@pytest.mark.rig
def test_compare_puts_a_change_on_the_build_when_only_the_build_differs(tmp_path: Path, bins,
                                                                         model) -> None:
    """The demo run on this machine with each flavour (mainline, the seed-era b6110, ik_llama.cpp):
    the same profile, so between two of them the build is all that differs, and compare says
    so. Each flavour's llama-bench row is in the database, ik's own fields kept beside it."""
    home = tmp_path / "data"
    for flavour in ("mainline", "b6110", "ik"):
        bins[flavour]
        demo = _cli("demo", "--headless", "--flavour", flavour, env_home=home)
        assert demo.returncode == 0, demo.stderr
    conn = sqlite3.connect(home / "rpctui" / "history.sqlite")
    commits = {c for (c,) in conn.execute("SELECT DISTINCT build_commit FROM llama_bench")}
    assert commits == {FLAVOURS[f].build_commit for f in ("mainline", "b6110", "ik")}
    extras = [json.loads(e) for (e,) in conn.execute("SELECT extra FROM bench")]
    assert any("mla_attn" in e for e in extras)  # ik's, which llama.cpp's table has no column for
    out = _cli("compare", "last~2", "last~1", env_home=home)
    assert out.returncode == 0, out.stderr
    assert "B against A: the only difference is the build (" in out.stdout, out.stdout
    assert "llama-bench: 0c1e570 (11312) -> " in out.stdout
    shown = _cli("history", "show", "last", env_home=home).stdout
    assert re.search(r"^local .* lo, MTU 65536 ", shown, re.M), shown  # one machine: loopback
    rows = [line for line in out.stdout.splitlines() if " t/s " in line]
    assert rows and all(re.search(r"(beyond noise|within noise|cannot tell)$", r) for r in rows)


def test_report_in_markdown_with_its_charts_beside_it(runs: Path, tmp_path: Path) -> None:
    home = tmp_path / "data"
    out = tmp_path / "out" / "rig.md"
    out.parent.mkdir()
    made = _cli("report", "rig-60403", "--out", str(out), env_home=home)
    assert made.returncode == 0, made.stderr
    text = out.read_text()
    assert "## t/s by node count" in text
    assert re.search(r"\| pp128 \| 544\.52 ± 55\.07 \|", text)
    assert "| 10.215.0.4:50052 | n4 | 0.42 | 49.9 |" in text
    assert "| n1 | RAM | 0.77 | 23.5 | 3 % |" in text
    for chart in ("scaling", "memory", "network"):
        assert f"![{chart}](rig-{chart}.svg)" in text
        svg = (out.parent / f"rig-{chart}.svg").read_text()
        assert svg.startswith("<svg") and 'class="series"' in svg
    assert _cli("report", "nothing-like-it", env_home=home).returncode != 0


CHART_PROBE = """<script>
const charts = [...document.querySelectorAll('figure svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  const lines = [...svg.querySelectorAll('polyline.series')].map(p => p.getBBox());
  return {id: svg.parentElement.id, width: box.width, height: box.height,
          series: lines.length, drawn: lines.filter(b => b.width > 0 || b.height > 0).length};
});
document.body.setAttribute('data-charts', JSON.stringify(charts));
</script>"""


def _charts_in_chromium(html: Path, work: Path) -> list[dict[str, object]]:
    """What a real browser drew: each chart's size and how many of its lines have a shape."""
    probe = work / "probe.html"
    probe.write_text(html.read_text().replace("</body>", CHART_PROBE + "</body>"))
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-quic", "--no-first-run", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={work / 'chromium'}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'data-charts="([^"]*)"', out.stdout)
    assert found, out.stderr[-2000:]
    import html as html_lib

    return json.loads(html_lib.unescape(found.group(1)))


@pytest.mark.rig
def test_html_report_of_a_real_sweep_renders_in_a_browser(clean_rig, bins, model,
                                                          tmp_path: Path) -> None:
    """A sweep over 1, 2 and 3 servers on the namespace rig, reported as one HTML file, opened
    in headless Chromium: every chart is laid out and every line in it has a shape."""
    from tests.conftest import rig_profile

    home = tmp_path / "data"
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=3, extra="[sweep]\nservers = [1, 2, 3]\n")
    run = _cli("run", str(profile), env_home=home)
    assert run.returncode == 0, run.stderr
    # Each node's link, as its probe read it inside its namespace: the veth named eth0.
    conn = sqlite3.connect(home / "rpctui" / "history.sqlite")
    links = conn.execute("SELECT node, link, link_mbps, mtu FROM nodes ORDER BY node").fetchall()
    assert links == [(f"n{i}", "eth0", 10000, 1500) for i in (1, 2, 3)]
    page = tmp_path / "report.html"
    made = _cli("report", "last", "--format", "html", "--out", str(page), env_home=home)
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert "<script" not in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")
    # The main node runs a server too: 1, 2 and 3 servers are 1, 2 and 3 nodes.
    assert "<th>1 node</th><th>2 nodes</th><th>3 nodes</th>" in text
    charts = {c["id"]: c for c in _charts_in_chromium(page, tmp_path)}
    assert set(charts) == {"chart-scaling", "chart-memory", "chart-network"}
    for chart in charts.values():
        assert chart["width"] == 640 and chart["height"] == 300
        assert chart["series"] and chart["drawn"] == chart["series"]
    assert charts["chart-scaling"]["series"] == 2  # pp and tg
    assert charts["chart-memory"]["series"] == 3  # one line per node


@pytest.mark.rig
def test_metrics_are_served_during_a_real_run(clean_rig, bins, model, tmp_path: Path) -> None:
    """`rpctui run --metrics` on the 4-node namespace rig, scraped as Prometheus would scrape
    it: node memory and network, the servers, their loads and the job's results."""
    import socket
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import rig_profile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model)
    proc = subprocess.Popen([sys.executable, "-m", "rpctui.cli", "run", str(profile), "--metrics",
                             f"127.0.0.1:{port}", "--metrics-hold", "3"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")})
    scrapes: list[dict[str, list[tuple[dict[str, str], float]]]] = []
    try:
        while proc.poll() is None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            except OSError:
                time.sleep(0.1)
                continue
            scrapes.append({f.name: [(dict(x.labels), x.value) for x in f.samples]
                            for f in text_string_to_metric_families(text.decode())})
            time.sleep(0.2)
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(scrapes) >= 3
    jobs = [labels["job"] for s in scrapes for labels, _ in s["rpctui_run_info"]]
    assert "running" in jobs  # scraped while the job ran, not only after
    last = scrapes[-1]
    used = {labels["node"]: v for labels, v in last["rpctui_node_memory_used_bytes"]}
    assert set(used) == {"n1", "n2", "n3", "n4"} and all(v > 0 for v in used.values())
    assert {labels["node"] for labels, _ in last["rpctui_node_network_receive_bytes_per_second"]} \
        == {"n1", "n2", "n3", "n4"}
    ready = [s["rpctui_server_ready"] for s in scrapes]
    assert any(len(r) == 4 and all(v == 1 for _, v in r) for r in ready)
    loads = {labels["endpoint"]: v for labels, v in last["rpctui_server_load_progress_ratio"]}
    servers = {e: v for e, v in loads.items() if e != "local"}  # local: the main node's share
    assert len(servers) == 4 and all(v == 1.0 for v in servers.values())
    tps = {labels["test"]: v for labels, v in last["rpctui_bench_tokens_per_second"]}
    assert set(tps) == {"pp32", "tg8"} and all(v > 0 for v in tps.values())


def test_a_metrics_address_that_cannot_be_served_stops_the_run_before_it_starts(
        tmp_path: Path) -> None:
    import socket

    example = str(ROOT / "examples" / "loopback.toml")
    bad = _cli("run", example, "--metrics", "nine-four-six-four", env_home=tmp_path)
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr and "fix:" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _cli("run", example, "--metrics", str(port), env_home=tmp_path)
    assert busy.returncode != 0 and f"cannot serve metrics on 127.0.0.1:{port}" in busy.stderr
    assert "starting" not in busy.stderr and not (tmp_path / "rpctui" / "runs").exists()


def test_report_of_a_recorded_sweep_has_seed_000s_scaling_table(tmp_path: Path) -> None:
    """A real 4-node sweep (1 to 4 servers, recorded on the rig): t/s by node count with each
    count's ratio to one node, as seed 000 posted it."""
    home = tmp_path / "data"
    (home / "rpctui" / "runs").mkdir(parents=True)
    (home / "rpctui" / "runs" / "sweep.jsonl").write_text((FIXTURES / "rig4-sweep.jsonl").read_text())
    out = _cli("report", "last", env_home=home)
    assert out.returncode == 0, out.stderr
    assert "| test | 1 node | 2 nodes | 3 nodes | 4 nodes |" in out.stdout
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.stdout.splitlines()
            if line.startswith(("| pp32", "| tg8"))}
    events = read_run(FIXTURES / "rig4-sweep.jsonl")
    pp = {e.n_servers: e.row["avg_ts"] for e in events
          if isinstance(e, ev.BenchResult) and e.row["n_gen"] == 0}
    assert f"{pp[1]:.2f} ± 0.00 |" in rows["pp32"]
    assert f"{pp[4]:.2f} ± 0.00 ({pp[4] / pp[1]:.2f}x) |" in rows["pp32"]


def test_compare_sweep_steps_of_one_run(tmp_path: Path) -> None:
    """RUN:STEP: the one-server and the four-server steps of a real sweep, side by side."""
    home = tmp_path / "data"
    (home / "rpctui" / "runs").mkdir(parents=True)
    (home / "rpctui" / "runs" / "sweep.jsonl").write_text((FIXTURES / "rig4-sweep.jsonl").read_text())
    out = _cli("compare", "last:0", "last:3", env_home=home)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^A: .*:0$", out.stdout, re.M) and re.search(r"^B: .*:3$", out.stdout, re.M)
    assert re.search(r"^pp32 t/s\s+\d", out.stdout, re.M)
    assert "B against A: the only difference is the servers" in out.stdout
    assert "10.207.0.4:50052: added" in out.stdout


async def test_the_app_serves_its_state_as_metrics(tmp_path: Path) -> None:
    """The app with --metrics, on a replayed real 4-node run: a scrape reads the nodes'
    memory and the results from the app's state."""
    import asyncio
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from rpctui.tui.app import RpcTuiApp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = RpcTuiApp(replay=RIG4, replay_speed=0, record=False, metrics=f"127.0.0.1:{port}")
    async with app.run_test(size=(120, 40)):
        await app.workers.wait_for_complete()
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
    families = {f.name: f.samples for f in text_string_to_metric_families(text.decode())}
    assert {s.labels["node"] for s in families["rpctui_node_memory_used_bytes"]} == \
        {"n1", "n2", "n3", "n4"}
    assert {s.labels["test"] for s in families["rpctui_bench_tokens_per_second"]} == \
        {"pp128", "tg32"}
    assert [s.value for s in families["rpctui_memory_warnings"] if s.labels["node"] == "n4"] == [1]
    with pytest.raises(OSError):  # and it stops with the app
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
