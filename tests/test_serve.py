"""`rpctui serve` on the namespace rig: llama-server over two rpc-servers, a real completion
through it, an rpc-server killed under load and the service back, the restart limit, and
nothing left when it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, recorded_events, rig_profile, rpctui, rpctui_env, wait_for_line
from tests.rig import Rig, RigNode

pytestmark = pytest.mark.rig

#: A client on the main node that keeps llama-server busy: a completion after another, one
#: line per answer ("ok <t>" or "fail <t> <why>"), until its stdin closes.
LOAD = r"""
import json, sys, threading, time, urllib.request
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
body = json.dumps({"prompt": "Once upon a time", "n_predict": 24, "temperature": 0}).encode()
while not stop.is_set():
    try:
        req = urllib.request.Request("http://127.0.0.1:%s/completion", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:
            ok = "content" in json.load(answer)
        print(("ok " if ok else "fail ") + f"{time.time():.3f}", flush=True)
    except Exception as exc:
        print(f"fail {time.time():.3f} {type(exc).__name__}", flush=True)
        time.sleep(0.05)
"""


def serve_profile(rig: Rig, bins, model: str, path: Path, **job: object) -> Path:
    settings = {"kind": "server", "model": model, "ngl": 99, "ctx_size": 512,
                "server_port": 8091, "restart_backoff_s": 0.5, **job}
    text = "[job]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    return rig_profile(rig, path, bin_dir=bins["mainline"], model=model, servers=2, job=text)


def start_serve(profile: Path, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rpctui.cli.main", "serve", str(profile)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=rpctui_env(tmp_path), cwd=ROOT)


def kill_rpc_server(node: RigNode) -> int:
    """SIGKILL the ggml-rpc-server process in the node (as the OOM killer would)."""
    for pid in map(int, subprocess.run(["ip", "netns", "pids", node.name], capture_output=True,
                                       text=True).stdout.split()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"ggml-rpc-server"):
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no ggml-rpc-server in {node.name}")


def test_serve_survives_a_server_killed_under_load(clean_rig: Rig, bins, model,
                                                   tmp_path: Path) -> None:
    """Healthy, one completion answered; a client keeps it busy; n2's rpc-server is killed:
    rpctui says so, restarts the servers and llama-server, is healthy again, and the client's
    requests succeed again. Ctrl-C then ends everything (exit 130, nothing left)."""
    n1, n2 = clean_rig.nodes[0], clean_rig.nodes[1]
    profile = serve_profile(clean_rig, bins, model, tmp_path / "p.toml")
    serve = start_serve(profile, tmp_path)
    load = None
    answers: list[str] = []
    try:
        seen = wait_for_line(serve, "service healthy", timeout=120)
        assert "service loading: llama-server starting at http://127.0.0.1:8091 on n1" in "".join(
            seen)
        load = subprocess.Popen(n1.exec_argv([sys.executable, "-c", LOAD % 8091]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: answers.extend(iter(load.stdout.readline, "")),
                                  daemon=True)
        reader.start()
        _wait(lambda: sum(a.startswith("ok") for a in answers) >= 3, "answers before the kill")
        killed_at = time.time()
        kill_rpc_server(n2)
        lines = wait_for_line(serve, "service restarting", timeout=60)
        lines += wait_for_line(serve, "service healthy", timeout=120)
        _wait(lambda: any(a.startswith("ok") and float(a.split()[1]) > killed_at + 0.5
                          for a in answers), "an answer after the restart")
    finally:
        if load is not None:
            load.stdin.close()
            load.wait(timeout=60)
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=60)
    text = "".join(lines)
    assert "server 10.201.0.2:50052 on node n2 was killed by SIGKILL" in text, text
    assert ("service restarting: rpc-server 10.201.0.2:50052 on n2 exited (code 137); restart "
            "1 of 3 in 0.5 s") in text, text
    assert serve.returncode == 130, err[-2000:]
    assert "teardown: every process ended" in err
    states = [(e["state"], e["restarts"]) for e in recorded_events(tmp_path)
              if e["type"] == "ServiceStatus"]
    assert states == [("loading", 0), ("healthy", 0), ("restarting", 1), ("loading", 1),
                      ("healthy", 1)], states
    failed = [a for a in answers if a.startswith("fail")]
    print(f"{len(answers)} requests, {len(failed)} failed while the service restarted")
    assert clean_rig.leftovers() == {}


def test_serve_gives_up_after_its_restart_limit(clean_rig: Rig, bins, model,
                                                tmp_path: Path) -> None:
    """restart_limit = 0: the first crash ends the service, exit 1, naming what died."""
    profile = serve_profile(clean_rig, bins, model, tmp_path / "p.toml", restart_limit=0)
    serve = start_serve(profile, tmp_path)
    try:
        wait_for_line(serve, "service healthy", timeout=120)
        kill_rpc_server(clean_rig.nodes[1])
        _, err = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 1, err[-2000:]
    assert ("service failed: rpc-server 10.201.0.2:50052 on n2 exited (code 137); restarted 0 "
            "times already (restart_limit): giving up") in err, err[-2000:]
    assert clean_rig.leftovers() == {}


def test_serve_refuses_a_profile_whose_job_is_not_a_server(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('[[nodes]]\nname = "n1"\nhost = "localhost"\nmain = true\n'
                       '[job]\nmodel = "m.gguf"\n')
    result = rpctui(tmp_path, "serve", str(profile))
    assert result.returncode == 2, result.stderr
    assert f"rpctui serve runs llama-server; {profile}'s job is 'bench'" in result.stderr
    assert 'fix: set kind = "server" under [job]' in result.stderr


def _wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("name,extra", [("tiny-swa", []), ("tiny-granite-hybrid", []),
                                        ("tiny-swa", ["-np", "2"])])
def test_served_model_loads_as_planned(clean_rig: Rig, bins, tmp_path: Path, name: str,
                                       extra: list[str]) -> None:
    """llama-server's own sequences: current mainline serves 4 in one unified cache unless
    told otherwise (-np 2: a stream each). The window model's window cache is sized for all
    sequences (4 x 64 + a micro-batch of 64: 512 cells, where one sequence's would be 256),
    the hybrid keeps a state row per sequence; every
    model and KV buffer the service allocated is what `rpctui plan` says (which needs the
    buffer lines: rpctui passes -lv 4 to this llama-server)."""
    from rpctui.llama.tinymodel import ensure_model

    model = str(ensure_model(name))
    profile = serve_profile(clean_rig, bins, model, tmp_path / "p.toml", ctx_size=1024,
                            ubatch_size=64, extra_args=extra)
    plan = rpctui(tmp_path, "plan", str(profile), "--json")
    assert plan.returncode == 0, plan.stderr
    rows = {r["device"]: r for r in json.loads(plan.stdout)["devices"] if r["scope"] != "node"}
    serve = start_serve(profile, tmp_path)
    try:
        wait_for_line(serve, "service healthy", timeout=120)
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=60)
    assert serve.returncode == 130, err[-2000:]
    got: dict[tuple[str, str], float] = {}
    for e in recorded_events(tmp_path):
        if e["type"] == "BufferAllocated" and e["kind"] in ("model", "kv"):
            device = "CPU (main node)" if not str(e["device"]).startswith("RPC") else e["device"]
            got[(e["kind"], device)] = got.get((e["kind"], device), 0.0) + float(e["mib"])
    assert got, "the service recorded no buffer lines"
    for device, row in rows.items():
        for kind in ("model", "kv"):
            actual = got.get((kind, device), 0.0)
            # two KV lines per device (window and full, or KV and RS), each rounded
            assert abs(row[f"{kind}_mib"] - actual) <= 0.011, (device, kind, row, actual)
    assert clean_rig.leftovers() == {}
