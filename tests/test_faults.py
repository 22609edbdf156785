"""Faults that do not end by themselves, on the namespace rig: a node's sshd killed, a node
rebooted. Each must end the job within a stated bound, name the node, and leave nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import needs_namespaces, rpctui
from tests.rig import Rig
from tests.test_rig_run import start_long_run

pytestmark = [pytest.mark.rig, needs_namespaces]

#: From the fault to rpctui's exit: the node's closed connection is seen at once, the job is
#: ended (SIGTERM, then teardown), and teardown's one try to reach the node again fails fast
#: (nothing listens) or finds the node back. Measured on the rig: see docs/PERFORMANCE.md.
BOUND_S = 15.0


def test_sshd_killed_mid_run_ends_the_job_naming_the_node(clean_rig: Rig, bins, model,
                                                          tmp_path: Path) -> None:
    """Every sshd on n2 (its listener and rpctui's session) is SIGKILLed while llama-bench runs
    through n2's server. rpctui loses its only way to stop that server: the job is ended, the
    diagnosis names n2 and says its sshd went; the server ends with its session (the launcher
    sees its stdin close), so nothing is left once sshd is back."""
    n2 = clean_rig.nodes[1]
    run = start_long_run(clean_rig, bins, model, tmp_path, servers=2, repetitions=50)
    try:
        time.sleep(1.0)
        killed = clean_rig.kill_sshd(n2)
        fault = time.monotonic()
        _, err = run.communicate(timeout=120)
        took = time.monotonic() - fault
    finally:
        if run.poll() is None:
            run.kill()
        clean_rig.start_sshd(n2)
    print(f"sshd processes killed: {killed}; rpctui ended {took:.1f} s after\n{err}")
    assert killed >= 2, "expected the listener and rpctui's session process"
    assert run.returncode == 1, err[-3000:]
    assert "lost node n2: its sshd closed the connection" in err, err[-3000:]
    assert took < BOUND_S, took
    assert clean_rig.leftovers(settle_s=30) == {}


def test_a_node_rebooted_mid_run_ends_the_job_and_the_next_run_works(clean_rig: Rig, bins,
                                                                     model,
                                                                     tmp_path: Path) -> None:
    """n3 reboots while llama-bench runs through its server: everything in it dies, its network
    is gone for a second, then it comes back with the same address, host key and sshd. The job
    ends within the bound naming n3, nothing is left anywhere, and the same profile runs again
    once the node is back, with no manual clean-up."""
    n3 = clean_rig.nodes[2]
    run = start_long_run(clean_rig, bins, model, tmp_path, servers=3, repetitions=50)
    try:
        time.sleep(1.0)
        fault = time.monotonic()
        clean_rig.reboot(n3, down_s=1.0)
        _, err = run.communicate(timeout=120)
        took = time.monotonic() - fault
    finally:
        if run.poll() is None:
            run.kill()
    print(f"rpctui ended {took:.1f} s after n3 went down\n{err}")
    assert run.returncode == 1, err[-3000:]
    assert "lost node n3" in err, err[-3000:]
    assert took < BOUND_S, took
    assert clean_rig.leftovers(settle_s=30) == {}
    again = rpctui(tmp_path, "run", str(tmp_path / "p.toml"), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert clean_rig.leftovers() == {}
