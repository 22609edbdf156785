"""Shared fixtures: real llama.cpp builds, the generated model, a real SSH cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpctui.llama.build import ensure_build
from rpctui.llama.tinymodel import ensure_model
from tests.rig import Rig, node_toml

ROOT = Path(__file__).resolve().parent.parent


def _sigterm(_signum: int, _frame: object) -> None:
    # pytest skips fixture teardown on SIGTERM unless it becomes an exception.
    raise KeyboardInterrupt("SIGTERM")


signal.signal(signal.SIGTERM, _sigterm)


class Bins:
    """bin directory of a flavour, built on first use (scripts/setup builds all three first)."""

    def __getitem__(self, flavour: str) -> str:
        return str(ensure_build(flavour).bin_dir)


@pytest.fixture(scope="session")
def bins() -> Bins:
    return Bins()


@pytest.fixture(scope="session")
def model() -> str:
    return str(ensure_model("tiny"))


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    # RPCTUI_RIG_PREFIX / RPCTUI_RIG_NET: a second rig beside one that is running (tests of a
    # checkout next to a fresh-setup, say) must not share its namespaces or subnet.
    r = Rig(4, prefix=os.environ.get("RPCTUI_RIG_PREFIX", "rt"),
            net=int(os.environ.get("RPCTUI_RIG_NET", "201"))).up()
    try:
        yield r
    finally:
        r.down()


@pytest.fixture()
def clean_rig(rig: Rig) -> Iterator[Rig]:
    """The rig, checked for leftover processes after the test (the test fails if any)."""
    assert rig.leftovers(settle_s=0) == {}, "a previous test left processes behind"
    yield rig
    left = rig.leftovers()
    assert left == {}, f"processes left behind on nodes: {left}"


needs_namespaces = pytest.mark.skipif(
    not Rig(1).namespaces, reason="needs root (network namespaces, ip link and tc)")


def rig_profile(rig: Rig, path: Path, *, bin_dir: str | dict[int, str], model: str,
                servers: int = 4, per_node: int = 1, job: str = "", extra: str = "",
                nodes: int | None = None, server_extra: dict[str, object] | None = None,
                node_extra: dict[str, object] | None = None) -> Path:
    """Write a profile for the first ``nodes`` rig nodes; node 1 is main. ``server_extra``,
    ``node_extra``: settings for every server, every node."""
    count = nodes or min(len(rig.nodes), max(1, -(-servers // per_node)))
    parts = ['name = "rig"', extra, ""]
    made = 0
    for i, node in enumerate(rig.nodes[:count]):
        srv = []
        for j in range(per_node):
            if made < servers:
                srv.append({"port": 50052 + j, "threads": 1, **(server_extra or {})})
                made += 1
        b = bin_dir[i] if isinstance(bin_dir, dict) else bin_dir
        parts.append(node_toml(rig, node, name=f"n{i + 1}", main=i == 0, bin_dir=b, servers=srv,
                               extra=node_extra))
    parts.append(job or f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\n'
                        f'gen_tokens = [8]\nrepetitions = 1\n')
    path.write_text("\n".join(parts))
    return path


def rpctui_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env.pop("SSH_AUTH_SOCK", None)
    return env


def rpctui(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "rpctui.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, env=rpctui_env(tmp_path), cwd=ROOT)


def recorded_events(tmp_path: Path) -> list[dict[str, object]]:
    import json

    # the newest run: two runs started in one second are named in the order of a random
    # suffix, so the name does not say which came last; the last written does
    files = sorted((tmp_path / "data" / "rpctui" / "runs").glob("*.jsonl"),
                   key=lambda f: f.stat().st_mtime_ns)
    assert files, "no run was recorded"
    return [json.loads(line) for line in files[-1].read_text().splitlines()]


async def wait_until(pilot: Any, condition: Callable[[], object], steps: int = 200) -> None:
    """Let a Pilot-driven app run, 50 ms at a time, until ``condition`` holds or ``steps`` have
    passed; the caller asserts what it waited for."""
    for _ in range(steps):
        await pilot.pause(0.05)
        if condition():
            return


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    """Read proc.stderr until a line contains ``needle``; return the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never saw {needle!r}; got:\n{''.join(lines)}")


#: fixtures that need a llama.cpp build, the generated model's build-side tools or sshd nodes
_RIG_FIXTURES = {"bins", "model", "rig", "clean_rig"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a build or the rig is in the rig tier, marked or not: the fast tier
    (-m "not rig") never builds or starts namespaces. Set-up tests build too."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _RIG_FIXTURES or item.get_closest_marker("setup"):
            item.add_marker(pytest.mark.rig)
