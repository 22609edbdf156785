"""The app, driven with Pilot: a real recorded run replayed, a live run on this machine, and
the look of the cluster view pinned by a snapshot."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Static, Tabs, TextArea

from rpctui.history.index import import_recordings
from rpctui.history.store import read_run
from rpctui.run import events as ev
from rpctui.tui.app import ConfirmStop, RpcTuiApp
from rpctui.tui.screens import CompareScreen, EditorScreen, NodeScreen, RunsScreen
from rpctui.tui.widgets import JobView, KeyBar, NodeCard, render_node
from tests.conftest import ROOT, wait_until

H100_RUN = Path(__file__).parent / "fixtures" / "run-h100-two-cuda-servers.jsonl"


@pytest.fixture(autouse=True)
def _own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh settings and run directory per test: the theme starts at our default."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


async def test_replay_of_a_real_gpu_run_fills_the_views() -> None:
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.redraw()
        card = render_node(app.state, "gpu").plain
        assert "NVIDIA H100 80GB" in card and "VRAM" in card
        assert "127.0.0.1:50052 stopped  load 100.0%" in card
        await pilot.press("l")  # the job view is drawn when its tab is shown
        assert app.query_one(Tabs).active == "job-tab"
        table = app.query_one(JobView).query_one("#results")
        assert table.row_count == 2  # pp512 and tg128
        await pilot.press("q")
    assert app.return_value == 0


async def test_job_view_shows_a_served_llama_servers_status() -> None:
    """A real `rpctui serve` recording (an rpc-server killed, the service restarted): the job
    view heads with llama-server's latest status and restart count."""
    served = Path(__file__).parent / "fixtures" / "rig-serve-restart.jsonl"
    app = RpcTuiApp(replay=served, replay_speed=0, record=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("l")
        await pilot.pause()
        text = str(app.query_one(JobView).query_one("#command", Static).render())
        assert "llama-server HEALTHY at http://127.0.0.1:8091 on n1 · restarts 1" in text, text
        assert "a completion of 8 tokens came back" in text
        await pilot.press("q")


async def test_job_view_shows_the_plan_next_to_what_llama_cpp_allocated() -> None:
    """A real 4-node rig recording: after the job, the job view lists each device's planned
    and allocated buffers (the plan check the run kept)."""
    rig4 = Path(__file__).parent / "fixtures" / "rig4-midload-warning.jsonl"
    app = RpcTuiApp(replay=rig4, replay_speed=0, record=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("l")
        await pilot.pause()
        app.redraw()
        shown = str(app.query_one(JobView).query_one("#command").render())
        check = app.state.plan_checks[0]
        assert f"plan vs llama.cpp (step 0, MiB): worst error {check.worst_error_mib:.2f}" in shown
        device, planned, allocated = check.rows[0][0], check.rows[0][1], check.rows[0][2]
        assert device in shown and f"{planned:9.2f} planned {allocated:9.2f} allocated" in shown
        await pilot.press("q")


async def test_theme_is_ours_and_remembered(tmp_path: Path) -> None:
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test() as pilot:
        assert app.theme == "rpctui-strix"
        assert {"rpctui-strix", "rpctui-lan-light"} <= set(app.available_themes)
        app.theme = "rpctui-lan-light"
        await pilot.pause()
    again = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with again.run_test():
        assert again.theme == "rpctui-lan-light"


async def test_live_demo_runs_the_job_and_quitting_stops_everything(bins, model) -> None:
    from rpctui.cli.main import _demo_profile

    app = RpcTuiApp(profile=_demo_profile(None))
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_until(pilot, lambda: app.connected, steps=200)
        assert app.connected, "never connected"
        await pilot.press("r")
        await wait_until(pilot, lambda: len(app.state.results) == 2 and not app.job_running, steps=600)
        assert [r.row["n_gen"] for r in app.state.results] == [0, 16]
        await pilot.press("l")
        assert app.query_one(JobView).query_one("#results").row_count == 2
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmStop)
        await pilot.press("y")
        await pilot.pause(0.5)
    assert app.state.teardown == "done"
    left = subprocess.run(["pgrep", "-f", "ggml-rpc-server -H 127.0.0.1 -p 5005[23]"],
                          capture_output=True)
    assert left.returncode == 1, left.stdout


async def test_the_app_keeps_a_server_job_up_until_stopped(bins, model) -> None:
    """A server job in the app is supervised as `rpctui serve` does: healthy after a real
    completion, shown in the job view; `x` stops it for good (no restart), `q` ends the rest."""
    from rpctui.cli.main import _demo_profile

    demo = _demo_profile(None)
    profile = dataclasses.replace(demo, job=dataclasses.replace(
        demo.job, kind="server", server_port=8093, ctx_size=512))
    app = RpcTuiApp(profile=profile)
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_until(pilot, lambda: app.connected, steps=200)
        await pilot.press("r")
        await wait_until(pilot, lambda: app.state.service is not None
                         and app.state.service.state == "healthy", steps=600)
        assert app.state.service is not None and app.state.service.state == "healthy"
        await pilot.press("l")
        await pilot.pause()
        text = str(app.query_one(JobView).query_one("#command", Static).render())
        assert "llama-server HEALTHY at http://127.0.0.1:8093 on local · restarts 0" in text
        await pilot.press("x")
        await wait_until(pilot, lambda: app.state.service.state == "stopped"
                         and not app.job_running, steps=200)
        assert app.state.service.state == "stopped" and app.state.service.restarts == 0
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.5)
    assert app.state.teardown == "done"
    left = subprocess.run(["pgrep", "-f", "llama-server -m"], capture_output=True)
    assert left.returncode == 1, left.stdout


async def test_configured_servers_show_before_they_start(bins, model) -> None:
    """Every server of the profile is on its node's card from the start, with its planned
    share, so `s` does what the card shows (issue 9: they appeared only once started)."""
    from rpctui.cli.main import _demo_profile

    app = RpcTuiApp(profile=_demo_profile(None), record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        card = render_node(app.state, "local").plain
        assert "127.0.0.1:50052 not started" in card and "127.0.0.1:50053 not started" in card
        await wait_until(pilot, lambda: app.connected, steps=200)
        assert app.connected, "never connected"
        card = render_node(app.state, "local").plain
        # the demo's default split: the plan's share of each server (weights, KV, compute;
        # 10 MiB since compute estimates are fitted from above)
        assert "127.0.0.1:50052 not started  plan 10 MiB" in card, card
        assert "127.0.0.1:50053 not started  plan " in card, card
        await pilot.press("s")
        await wait_until(pilot, lambda: app.servers_up, steps=200)
        card = render_node(app.state, "local").plain
        assert "not started" not in card and "127.0.0.1:50052 ready" in card
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.5)
    assert app.state.teardown == "done"


def test_cluster_view_snapshot(snap_compare) -> None:
    async def replayed(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        pilot.app.redraw()
        await pilot.pause()

    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    assert snap_compare(app, terminal_size=(150, 40), run_before=replayed)


def test_app_module_is_not_imported_by_the_core() -> None:
    assert "textual" not in (ROOT / "rpctui" / "engine" / "orchestrator.py").read_text()


def _runs_dir(tmp_path: Path) -> Path:
    import shutil

    runs = tmp_path / "data" / "rpctui" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    shutil.copy(H100_RUN, runs / "20261122-044200-cuda-two-servers.jsonl")
    demo = subprocess.run([sys.executable, "-m", "rpctui.cli", "demo", "--headless"], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")})
    assert demo.returncode == 0, demo.stderr
    return runs


async def test_runs_screen_compares_two_real_runs(tmp_path: Path, bins, model) -> None:
    _runs_dir(tmp_path)
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("u")
        await app.workers.wait_for_complete()  # the runs screen reads the history off the UI
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and len(app.screen.runs) == 2
        await pilot.press("space", "down", "space", "c")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        table = app.screen.query_one(DataTable)
        metrics = {table.get_row_at(i)[0] for i in range(table.row_count)}
        assert {"pp512 t/s", "tg128 t/s", "pp64 t/s", "tg16 t/s", "load s (slowest server)",
                "peak MiB (highest node)"} <= metrics
        why = str(app.screen.query_one("#compare-why").render())
        assert "B against A:" in why and "nodes: gpu" in why


async def test_editor_validates_as_you_type_and_saves_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    original = (ROOT / "examples" / "loopback.toml").read_text()
    path.write_text(original.replace("port = 50053", "port = 70000"))
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        app.push_screen(EditorScreen(path))
        await pilot.pause()
        problems = str(app.screen.query_one("#problems").render())
        assert "1 problem(s)" in problems and "servers[1].port: must be a TCP port" in problems
        await pilot.press("ctrl+s")
        assert path.read_text() != original  # an invalid profile is not saved over
        area = app.screen.query_one(TextArea)
        area.text = area.text.replace("port = 70000", "port = 50054")
        await pilot.pause()
        assert "valid profile" in str(app.screen.query_one("#problems").render())
        await pilot.press("ctrl+s")
    assert path.read_text() == original.replace("port = 50053", "port = 50054")
    assert "# The demo: two rpc-servers" in path.read_text()


async def test_node_detail_after_replay() -> None:
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("n")
        assert isinstance(app.screen, NodeScreen)
        app.dirty = True
        app.redraw()  # the views are drawn even while another screen is on top
        history = str(app.screen.query_one("#node-history").render())
        assert "memory in use over" in history and "rx over time" in history
        assert app.screen.query_one(DataTable).row_count == 2
        await pilot.pause()
        for chart, title in (("#node-memory-chart", "memory in use (GiB)"),
                             ("#node-network-chart", "network (MiB/s)")):
            drawn = app.screen.query_one(chart)
            assert drawn.size.height > 8
            text = "\n".join(drawn.render_line(y).text for y in range(drawn.size.height))
            assert title in text and ("▄" in text or "▀" in text)  # a line drawn, not axes alone


def test_job_view_snapshot(snap_compare) -> None:
    async def replayed(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.press("l")
        await pilot.pause()  # the tab catches up right after its first paint
        pilot.app.redraw()
        await pilot.pause(0.3)
        # How many log lines arrive before the first paint depends on timing; the snapshot
        # pins the command lines, results and layout, so the log is emptied for it.
        pilot.app.job_view.query_one("#log").clear()
        await pilot.pause()

    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    app.animation_level = "none"  # the log scrolls to its end without an animation
    assert snap_compare(app, terminal_size=(150, 40), run_before=replayed)


def test_editor_with_a_validation_error_snapshot(snap_compare) -> None:
    path = Path("/tmp/rpctui-snapshot/bad.toml")  # a fixed path: it shows on screen
    path.parent.mkdir(exist_ok=True)
    path.write_text((ROOT / "examples" / "loopback.toml").read_text()
                    .replace("threads = 1", "thread = 1", 1))

    async def open_editor(pilot: Pilot[None]) -> None:
        pilot.app.push_screen(EditorScreen(path))
        await pilot.pause()

    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    assert snap_compare(app, terminal_size=(150, 40), run_before=open_editor)


RIG4 = Path(__file__).parent / "fixtures" / "rig4-midload-warning.jsonl"


def _midload_prefix() -> Path:
    """The 4-node recording cut mid-load, just after its one OOM warning."""
    import json

    lines = RIG4.read_text().splitlines()
    warned = False
    for i, line in enumerate(lines):  # noqa: B007 - i is the cut point, used after the loop
        e = json.loads(line)
        warned = warned or e["type"] == "OomRisk"
        if warned and e["type"] == "LoadProgress" and e["endpoint"] and 30 < e["percent"] < 90:
            break
    path = Path("/tmp/rpctui-snapshot/rig4-midload.jsonl")  # fixed: its name shows on screen
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines[: i + 1]) + "\n")
    return path


async def test_midload_replay_shows_loading_and_the_one_warning() -> None:
    app = RpcTuiApp(replay=_midload_prefix(), replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        app.redraw()
        await pilot.pause()
        cards = {n: render_node(app.state, n).plain for n in app.state.nodes}
        assert len(cards) == 4
        assert sum("⚠" in c for c in cards.values()) == 1 and "⚠" in cards["n4"]
        assert any("[loading]" in c for c in cards.values())
        assert "over its 20 MiB budget" in cards["n4"]


def test_cluster_view_midload_with_a_warning_snapshot(snap_compare) -> None:
    async def replayed(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        pilot.app.redraw()
        await pilot.pause()

    app = RpcTuiApp(replay=_midload_prefix(), replay_speed=0, record=False)
    assert snap_compare(app, terminal_size=(150, 45), run_before=replayed)


def test_compare_view_snapshot(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path("/tmp/rpctui-snapshot/compare")
    _history(home)
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    import_recordings()

    async def compare(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        pilot.app.push_screen(CompareScreen(["cuda-two-servers", "rig-60403"]))
        await pilot.pause()

    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    assert snap_compare(app, terminal_size=(150, 40), run_before=compare)


@pytest.mark.rig
async def test_live_app_on_the_namespace_rig(clean_rig, bins, model, tmp_path: Path) -> None:
    """The app driving four real sshd nodes: connect, start servers, run, quit and stop."""
    from rpctui.profile.load import load_profile
    from tests.conftest import rig_profile

    profile = load_profile(rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                                       model=model, servers=4))
    app = RpcTuiApp(profile=profile)
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_until(pilot, lambda: app.connected, steps=200)
        assert app.connected
        await pilot.press("s")
        await wait_until(pilot, lambda: app.servers_up, steps=200)
        assert {s.status for s in app.state.servers.values()} == {"ready"}
        await pilot.press("r")
        await wait_until(pilot, lambda: len(app.state.results) == 2 and not app.job_running, steps=400)
        assert len(app.state.results) == 2
        cards = [render_node(app.state, n).plain for n in app.state.nodes]
        assert all("load 100.0%" in c for c in cards)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.5)
    assert app.state.teardown == "done"


async def test_new_profile_from_an_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rpctui.tui.screens import ExamplePicker

    monkeypatch.chdir(tmp_path)
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    app.replay_path = None  # as if opened with no profile
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExamplePicker)
        names = [p.name for p in app.screen.examples]
        assert "moe-experts-on-remote-cpu.toml" in names
        await pilot.press(*["down"] * names.index("moe-experts-on-remote-cpu.toml"), "enter")
        await pilot.pause()
        assert isinstance(app.screen, EditorScreen)
        assert "valid profile" in str(app.screen.query_one("#problems").render())
        await pilot.press("ctrl+s")
    saved = tmp_path / "my-moe-experts-on-remote-cpu.toml"
    assert "Seed 001" in saved.read_text()


async def test_a_new_sample_repaints_only_the_card_lines_it_changed() -> None:
    """Cards draw a line at a time and keep what did not change: a sample repaints the memory
    and network lines, not the title, build or server lines. The 32-node app's speed rests on
    it (bench/app_replay.py)."""
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        app.redraw()
        await pilot.pause()
        card = app.cluster_view.cards["gpu"]
        last = [e for e in read_run(H100_RUN) if isinstance(e, ev.NodeSample) and e.node == "gpu"][-1]
        assert last.mem_available_mib is not None
        app.post_event(dataclasses.replace(last, t=app.state.t + 1,
                                           mem_available_mib=last.mem_available_mib - 8192))
        app.redraw()
        await pilot.pause()
        shown = [card.render_line(y).text for y in range(card.size.height)]
        assert card.repainted, "the sample changed the RAM line: something is repainted"
        assert all(shown[y].startswith(("RAM", "VRAM", "GTT", "net")) for y in card.repainted)
        assert len(card.repainted) < len(shown) / 2
        tel = app.state.telemetry["gpu"]
        assert tel.used_mib is not None
        assert f"{tel.used_mib / 1024:.1f}/" in next(line for line in shown if line.startswith("RAM"))


class _Zapper(Static, can_focus=True):
    BINDINGS = [("z", "app.bell", "Zap")]


class _KeyBarApp(App[None]):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Button("one", id="one")
        yield Button("two", id="two")
        yield _Zapper("zapper", id="zapper")
        yield KeyBar()


async def test_the_key_bar_is_rebuilt_only_when_its_keys_change() -> None:
    """Textual's Footer mounts its keys again on every focus move; the key bar keeps them while
    the keys shown stay the same, and shows the new ones when they change."""
    app = _KeyBarApp()
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        bar = app.query_one(KeyBar)
        app.query_one("#one").focus()
        await pilot.pause()
        keys = list(bar.children)
        assert [k.description for k in keys if hasattr(k, "description")][:1] == ["Quit"]
        app.query_one("#two").focus()  # the same keys: nothing is mounted again
        await pilot.pause()
        assert list(bar.children) == keys and all(a is b for a, b in zip(bar.children, keys, strict=True))
        app.query_one("#zapper").focus()  # a key more: rebuilt, and it shows
        await pilot.pause()
        await pilot.pause()
        assert "Zap" in [getattr(k, "description", None) for k in bar.children]


async def test_moving_between_node_cards_keeps_the_key_bar() -> None:
    app = RpcTuiApp(replay=RIG4, replay_speed=0, record=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await app.workers.wait_for_complete()
        app.redraw()
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(app.focused, NodeCard)
        bar = app.query_one(KeyBar)
        keys = list(bar.children)
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(app.focused, NodeCard)
        assert keys and all(a is b for a, b in zip(bar.children, keys, strict=True))


async def test_tabs_switch_by_key_and_by_click() -> None:
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("l")
        assert app.query_one(Tabs).active == "job-tab"
        assert app.job_view.display and not app.cluster_view.display
        await pilot.click("#cluster-tab")
        await pilot.pause()
        assert app.query_one(Tabs).active == "cluster-tab"
        assert app.cluster_view.display and not app.job_view.display
        await pilot.click("#job-tab")
        await pilot.pause()
        assert app.job_view.display and not app.cluster_view.display


def _history(folder: Path) -> None:
    """A run store holding the three real recordings under their run ids."""
    runs = folder / "rpctui" / "runs"
    shutil.rmtree(folder, ignore_errors=True)
    runs.mkdir(parents=True)
    for path in (H100_RUN, RIG4, Path(__file__).parent / "fixtures" / "rig32-2hz.jsonl"):
        run_id = read_run(path)[0].run_id  # type: ignore[attr-defined]  # the first event is RunStarted
        (runs / f"{run_id}.jsonl").write_text(path.read_text())


async def test_runs_screen_shows_sorts_and_filters_the_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(tmp_path / "data")
    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    async with app.run_test(size=(200, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("u")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert [r[1] for r in rows] == ["2026-11-22 05:16", "2026-11-22 05:16", "2026-11-22 04:42"]
        assert {r[2] for r in rows} == {"rig", "cuda-two-servers"}
        assert {str(r[4]) for r in rows} == {"32", "4", "1"} and {r[9] for r in rows} == {"ok"}
        columns = list(table.columns.values())
        x = sum(c.get_render_width(table) for c in columns[:6]) + 1
        await pilot.click("#runs", offset=(x, 0))  # the pp t/s heading: fastest first
        await pilot.pause()
        assert [str(table.get_row_at(i)[6]) for i in range(3)] == ["73732.5", "3542.2", "544.5"]
        await pilot.press("slash")
        await pilot.press(*"cuda")
        await pilot.pause()
        assert table.row_count == 1 and table.get_row_at(0)[2] == "cuda-two-servers"


def test_runs_screen_snapshot(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path("/tmp/rpctui-snapshot/history")  # fixed: the database's path shows on screen
    _history(home)
    monkeypatch.setenv("XDG_DATA_HOME", str(home))

    async def opened(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.press("u")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    app = RpcTuiApp(replay=H100_RUN, replay_speed=0, record=False)
    assert snap_compare(app, terminal_size=(200, 20), run_before=opened)


async def test_a_sweep_draws_its_scaling_chart_in_the_job_tab() -> None:
    sweep = Path(__file__).parent / "fixtures" / "rig4-sweep.jsonl"
    app = RpcTuiApp(replay=sweep, replay_speed=0, record=False)
    async with app.run_test(size=(150, 50)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("l")
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        chart = app.job_view.query_one("#scaling-chart")
        assert chart.display and chart.size.height > 6
        text = "\n".join(chart.render_line(y).text for y in range(chart.size.height))
        assert "t/s by servers" in text and "pp32" in text and "tg8" in text
        assert "•" in text  # the points of each server count
