"""The core: no Textual in it, the launcher on real processes, events and state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpctui.history.store import read_run, result_rows
from rpctui.hosts.base import ChunkReader, LineSplitter, exit_signal_name, launcher_argv, signal_exit_code
from rpctui.hosts.local import LocalHost
from rpctui.run import events as ev
from rpctui.run.state import fold_all
from tests.conftest import ROOT, rpctui

CORE = ["rpctui.cli.main", "rpctui.cli.headless", "rpctui.engine.orchestrator",
        "rpctui.engine.servers", "rpctui.engine.job",
        "rpctui.engine.preflight", "rpctui.profile.load", "rpctui.history.store", "rpctui.run.state",
        "rpctui.llama.argv", "rpctui.llama.caps", "rpctui.llama.logs", "rpctui.llama.bench",
        "rpctui.llama.build", "rpctui.llama.tinymodel", "rpctui.hosts.ssh", "rpctui.hosts.local"]


def test_core_never_imports_textual_or_rich() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE) +
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _spawn_and_collect(argv: list[str], merge: bool = True) -> tuple[int, str, int | None]:
    async def go() -> tuple[int, str, int | None]:
        host = LocalHost()
        spawned = await host.spawn(launcher_argv(argv, stdbuf=True), merge_stderr=merge)
        text = "".join([t async for _, t in spawned.chunks()])
        return await spawned.wait(), text, spawned.pgid
    return asyncio.run(go())


def test_launcher_passes_argv_untouched_and_reports_exit_code() -> None:
    weird = "a path with spaces, 'quotes' and $(touch /tmp/rpctui-pwned)"
    rc, text, pgid = _spawn_and_collect([sys.executable, "-c",
                                         "import sys; print(sys.argv[1]); sys.exit(7)", weird])
    assert rc == 7 and text == weird + "\n" and pgid
    assert not Path("/tmp/rpctui-pwned").exists()


def test_launcher_env_and_address_space_limit() -> None:
    async def go() -> tuple[int, str]:
        argv = launcher_argv(["sh", "-c", 'echo "$X"; ulimit -v'], env={"X": "a b"},
                             limit_as_kib=123456)
        spawned = await LocalHost().spawn(argv, merge_stderr=True)
        text = "".join([t async for _, t in spawned.chunks()])
        return await spawned.wait(), text
    rc, text = asyncio.run(go())
    assert (rc, text) == (0, "a b\n123456\n")


def _alive(pgid: int) -> bool:
    out = subprocess.run(["ps", "-o", "stat=", "-s", str(pgid)], capture_output=True, text=True)
    return any(s.strip() and not s.strip().startswith("Z") for s in out.stdout.splitlines())


def test_kill_groups_ends_the_whole_tree() -> None:
    async def go() -> tuple[int, int, float]:
        host = LocalHost()
        tree = "sleep 60 & sleep 60 & wait"
        spawned = await host.spawn(launcher_argv(["sh", "-c", tree]), merge_stderr=True)
        await asyncio.sleep(0.2)
        assert spawned.pgid and _alive(spawned.pgid)
        start = time.monotonic()
        result = await host.kill_groups([spawned.pgid])
        return result.rc, spawned.pgid, time.monotonic() - start
    rc, pgid, took = asyncio.run(go())
    assert rc == 0 and not _alive(pgid) and took < 3


def _exists(pid: int) -> bool:
    """Whether pid is still in the process table, zombies included."""
    return Path(f"/proc/{pid}").exists()


def test_kill_groups_leaves_no_zombie_behind() -> None:
    """Ended means reaped: the launcher reaps its child before it exits (issue 9: an ended
    ggml-rpc-server stayed <defunct> after teardown said every process had ended)."""
    async def go() -> tuple[int, int]:
        host = LocalHost()
        spawned = await host.spawn(launcher_argv(["sh", "-c", "exec sleep 60"]))
        await asyncio.sleep(0.2)
        assert spawned.child_pid and _exists(spawned.child_pid)
        result = await host.kill_groups([spawned.pgid or 0])
        assert result.rc == 0
        return await asyncio.wait_for(spawned.wait(), 5), spawned.child_pid
    rc, child = asyncio.run(go())
    assert rc == 143
    assert not _exists(child), Path(f"/proc/{child}/stat").read_text()


def test_exit_codes_name_their_signal() -> None:
    assert signal_exit_code("TERM") == 143 and signal_exit_code("SEGV") == 139
    assert signal_exit_code("KILL") == 137 and signal_exit_code("NOSUCH") == 255
    assert exit_signal_name(143) == "SIGTERM" and exit_signal_name(137) == "SIGKILL"
    assert exit_signal_name(1) is None and exit_signal_name(255) is None


def test_closing_stdin_ends_the_group() -> None:
    """The watchdog: if rpctui goes away (or the SSH channel drops), the process group ends."""
    async def go() -> tuple[int, int]:
        spawned = await LocalHost().spawn(launcher_argv(["sleep", "60"]))
        await spawned.close_stdin()
        return await asyncio.wait_for(spawned.wait(), 5), spawned.pgid or 0
    rc, pgid = asyncio.run(go())
    assert rc == 143 and not _alive(pgid)


def test_chunk_reader_strips_markers_split_anywhere() -> None:
    text = "@@rpctui-pid 42\nhello\n@@rpctui-child 43\npartial line@@rpctui-exit 3\n"
    for size in (1, 3, 100):
        reader = ChunkReader()
        out = "".join(reader.feed(text[i:i + size]) for i in range(0, len(text), size))
        assert out == "hello\npartial line"
        assert (reader.pgid, reader.child_pid, reader.exit_code) == (42, 43, 3)


def test_line_splitter() -> None:
    s = LineSplitter()
    assert s.feed("a\nb") == ["a"]
    assert s.feed("c\r\n\nd") == ["bc", ""]
    assert s.flush() == ["d"]


def test_every_event_type_round_trips_through_json() -> None:
    for cls in ev.REGISTRY.values():
        event = cls(t=1.5)
        again = ev.from_dict(json.loads(json.dumps(event.to_dict())))
        assert again == event
    probed = ev.NodeProbed(t=2, node="a", devices=(("CPU", "EPYC", 100, 90),))
    assert ev.from_dict(json.loads(json.dumps(probed.to_dict()))) == probed


@pytest.mark.rig
def test_demo_runs_headless_on_loopback(tmp_path: Path) -> None:
    result = rpctui(tmp_path, "demo", "--headless", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["test"] for r in rows] == ["pp64", "tg16"] and all(r["servers"] == 2 for r in rows)
    # The recording replays into the same results.
    runs = sorted((tmp_path / "data" / "rpctui" / "runs").glob("*.jsonl"))
    state = fold_all(read_run(runs[-1]))
    assert [r["avg_ts"] for r in result_rows(state)] == [r["avg_ts"] for r in rows]
    assert state.exit_code == 0 and state.teardown == "done"
    assert {s.status for s in state.servers.values()} == {"stopped"}
    assert subprocess.run(["pgrep", "-f", "ggml-rpc-server -H 127.0.0.1 -p 5005[23]"],
                          capture_output=True).returncode == 1


@pytest.mark.skipif(os.environ.get("RPCTUI_SKIP_SETUP_TEST") == "1", reason="asked to skip")
@pytest.mark.rig
def test_readme_run_command_works(tmp_path: Path) -> None:
    """The README's first command, as written: scripts/run (set-up included) runs the demo."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    readme = (ROOT / "README.md").read_text().split("```")[1]
    assert "./scripts/run" in readme and "./scripts/test" in readme
    result = subprocess.run(["./scripts/run"], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| servers |" in result.stdout.replace("  ", " ") or "servers" in result.stdout
    assert "tg16" in result.stdout


@pytest.mark.rig
def test_sliding_window_model_shows_both_kv_buffers(tmp_path: Path) -> None:
    """A real run of the generated sliding-window model: the live lines name both of a
    device's KV buffers, and the distribution and the plan check count their sum (issue 9)."""
    profile = tmp_path / "swa.toml"
    profile.write_text((ROOT / "examples" / "loopback.toml").read_text()
                       .replace("50052", "50162").replace("50053", "50163")
                       .replace('"builtin:tiny"', '"builtin:tiny-swa"')
                       .replace("[64]", "[32]").replace("[16]", "[8]")
                       .replace("repetitions = 2", "repetitions = 1"))
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    second = "RPC0[127.0.0.1:50163]"
    assert f"kv buffer {second} (non-SWA cache): 0.12 MiB" in result.stderr
    assert f"kv buffer {second} (SWA cache): 0.25 MiB" in result.stderr
    state = fold_all(read_run(sorted((tmp_path / "data" / "rpctui" / "runs").glob("*.jsonl"))[-1]))
    kv = {device: kv for _node, device, _model, kv, _compute in state.distributions[-1].rows}
    assert kv[second] == 0.37 and kv["RPC0[127.0.0.1:50162]"] == 0.62
    import re
    assert re.search(rf"local +{re.escape(second)} +20\.14 \+ +0\.37 \+", result.stderr)
    assert re.search(rf"{re.escape(second)} +model .* KV +0\.\d\d planned +0\.37 allocated",
                     result.stderr)


FIXTURES = Path(__file__).parent / "fixtures"


def test_recordings_carry_their_format_and_old_ones_still_replay(tmp_path: Path) -> None:
    """The recorded fixtures predate the format number: they read as version 1, upgraded."""
    from rpctui.run.schema import SCHEMA_VERSION, recording_version

    raw = [json.loads(line) for line in (FIXTURES / "rig4-midload-warning.jsonl")
           .read_text().splitlines()]
    assert recording_version(raw) == 1
    state = fold_all(read_run(FIXTURES / "rig4-midload-warning.jsonl"))
    assert len(state.nodes) == 4 and state.warnings
    # a new recording says which format it is in
    from rpctui.profile.load import load_profile

    started = ev.run_started(load_profile(ROOT / "examples" / "loopback.toml"), "r", "run")
    assert json.loads(json.dumps(started.to_dict()))["schema"] == SCHEMA_VERSION


def test_a_recording_from_a_newer_rpctui_is_refused_clearly(tmp_path: Path) -> None:
    run = (FIXTURES / "rig4-midload-warning.jsonl").read_text().splitlines()
    first = json.loads(run[0])
    assert first["type"] == "RunStarted"
    first["schema"] = 99
    newer = tmp_path / "newer.jsonl"
    newer.write_text("\n".join([json.dumps(first), *run[1:50]]) + "\n")
    result = rpctui(tmp_path, "replay", str(newer))
    assert result.returncode == 2, result.stderr
    assert f"{newer} was recorded by a newer rpctui (recording format 99" in result.stderr
    assert "fix: replay it with that rpctui, or upgrade this one" in result.stderr
