"""Faults that do not end by themselves, on the namespace rig: a node's sshd killed, a node
rebooted. Each must end the job within a stated bound, name the node, and leave nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_namespaces, recorded_events, rpctui
from tests.rig import Rig
from tests.test_rig_run import start_long_run

pytestmark = [pytest.mark.rig, needs_namespaces]

#: From the fault to rpctui's exit: the node's closed connection is seen at once, the job is
#: ended (SIGTERM, then teardown), and teardown's one try to reach the node again fails fast
#: (nothing listens) or finds the node back. Measured on the rig: see docs/PERFORMANCE.md.
BOUND_S = 15.0


def test_a_link_cut_mid_load_ends_the_job_naming_the_node(clean_rig: Rig, bins, model,
                                                          tmp_path: Path) -> None:
    """n2's link is capped at 16 Mb/s, so its share of the weights takes seconds to send; the
    link goes down while they are on their way (llama.cpp would wait forever: RPC has no
    timeout). The keepalives (every second here: keepalive_s) notice within their bound, the
    job is ended naming n2, and once the link is back nothing is left. The recording shows the
    load never finished."""
    from rpctui.engine.processes import RECONNECT_TIMEOUT_S
    from rpctui.hosts.ssh import KEEPALIVE_MISSES

    n2 = clean_rig.nodes[1]
    link = f"{clean_rig.prefix}v{n2.index}"
    clean_rig.shape(n2, "16mbit")
    try:
        run = start_long_run(clean_rig, bins, model, tmp_path, servers=2, repetitions=5,
                             node_extra={"keepalive_s": 1.0})
        try:
            time.sleep(1.5)
            subprocess.run(["ip", "link", "set", link, "down"], check=True)
            cut = time.monotonic()
            _, err = run.communicate(timeout=120)
            took = time.monotonic() - cut
        finally:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
            if run.poll() is None:
                run.kill()
    finally:
        clean_rig.unshape(n2)
    print(f"job ended {took:.1f} s after the link was cut mid-load\n{err}")
    assert run.returncode == 1, err[-3000:]
    assert f"lost node n2: no answer to SSH keepalives for {KEEPALIVE_MISSES} s" in err, \
        err[-3000:]
    assert took < 1.0 * (KEEPALIVE_MISSES + 1) + RECONNECT_TIMEOUT_S + 4, took
    events = recorded_events(tmp_path)
    assert not [e for e in events if e["type"] == "BufferAllocated" and e["kind"] == "kv"], \
        "the load had finished before the cut: the test did not cut mid-load"
    assert clean_rig.leftovers(settle_s=60) == {}


def test_sshd_killed_mid_run_ends_the_job_naming_the_node(clean_rig: Rig, bins, model,
                                                          tmp_path: Path) -> None:
    """Every sshd on n2 (its listener and rpctui's session) is SIGKILLed while llama-bench runs
    through n2's server. rpctui loses its only way to stop that server: the job is ended, the
    diagnosis names n2 and says its sshd went; the server ends with its session (the launcher
    sees its stdin close), so nothing is left once sshd is back. The servers keep a tensor
    cache: after the failed job rpctui does not try to report on it (it once did, and a
    traceback from the lost connection replaced the diagnosis)."""
    n2 = clean_rig.nodes[1]
    cache = {"cache": True, "env": {"LLAMA_CACHE": str(tmp_path / "rpc-cache")}}
    run = start_long_run(clean_rig, bins, model, tmp_path, servers=2, repetitions=50,
                         server_extra=cache)
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
    assert "Traceback" not in err and "the load " not in err, err[-3000:]
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
    profile = tmp_path / "p.toml"  # the same profile, one repetition where it had fifty
    profile.write_text(profile.read_text().replace("repetitions = 50", "repetitions = 1"))
    again = rpctui(tmp_path, "run", str(profile), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert clean_rig.leftovers() == {}
