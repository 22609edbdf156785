"""End to end on real sshd nodes (network namespaces) with real llama.cpp: check and run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, recorded_events, rig_profile, rpctui, rpctui_env, wait_for_line
from tests.rig import Rig

pytestmark = pytest.mark.rig


def test_check_four_nodes_prints_preflight_table(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model)
    result = rpctui(tmp_path, "check", str(profile))
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for i in range(1, 5):
        assert f"| n{i} " in table
    assert table.count("mainline 0c1e570 (11312)") == 4
    assert table.count("| 7.0.0") == 4
    assert "preflight: PASS" in result.stderr
    events = [e["type"] for e in recorded_events(tmp_path)]
    assert "ServerStarting" not in events and "JobStarted" not in events


@pytest.mark.parametrize("servers", [1, 2, 4])
def test_run_bench_over_n_servers(clean_rig: Rig, bins, model, tmp_path: Path, servers: int) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=servers)
    result = rpctui(tmp_path, "run", str(profile), "--format", "json", "--out",
                    str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["test"] for r in rows] == ["pp32", "tg8"]
    assert all(r["servers"] == servers and r["avg_ts"] > 0 for r in rows)
    assert json.loads((tmp_path / "out.json").read_text()) == rows
    assert rows[0]["raw"]["gpu_info"].count(":50052") == servers
    events = recorded_events(tmp_path)
    model_buffers = [e for e in events if e["type"] == "BufferAllocated" and e["kind"] == "model"
                     and e["endpoint"]]
    assert len({e["endpoint"] for e in model_buffers}) == servers
    assert "run recorded in" in result.stderr


def test_two_servers_on_one_node_and_markdown(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, per_node=2)
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "servers" in header and "nodes" in header and "t/s" in header
    assert "| pp32 |" in result.stdout.replace("  ", " ") or "pp32" in result.stdout
    assert f"{clean_rig.nodes[0].address}:50053" in result.stderr


def test_sweep_runs_each_server_count(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          extra="[sweep]\nservers = [1, 2, 4]\n")
    result = rpctui(tmp_path, "run", str(profile), "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("model,size,params,backend,ngl,servers,nodes,test")
    servers = [line.split(",")[5] for line in lines[1:]]
    assert servers == ["1", "1", "2", "2", "4", "4"]
    jobs = [e for e in recorded_events(tmp_path) if e["type"] == "JobStarted"]
    assert [len(j["servers"]) for j in jobs] == [1, 2, 4]


def test_seed_era_build_runs(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["b6110"], model=model,
                          servers=2)
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows and rows[0]["raw"]["build_number"] == 6110
    assert "seed-era build 9a963895 (6110), RPC 2.0.0" in result.stderr
    # The seed-era client names buffers RPC[host:port].
    assert f"RPC[{clean_rig.nodes[1].address}:50052]" in result.stderr


def test_ik_build_check_and_bench(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["ik"], model=model,
                          servers=2)
    check = rpctui(tmp_path, "check", str(profile))
    assert check.returncode == 0, check.stderr
    assert check.stdout.count("ik 55d3c05b (4411)") == 2
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["test"] for r in rows} == {"pp32", "tg8"}
    # ik's llama-bench needs host:port|device in --rpc, and only has -o json.
    assert "|0," in result.stderr and "-o json " in result.stderr


def test_mixed_builds_are_refused_before_anything_starts(clean_rig: Rig, bins, model,
                                                         tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", model=model, servers=2,
                          bin_dir={0: bins["mainline"], 1: bins["b6110"]})
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 3, result.stderr
    assert "nodes run different llama.cpp builds" in result.stderr
    assert "n1: mainline build 0c1e570 (11312), RPC protocol 7.0.0" in result.stderr
    assert "n2: seed-era build 9a963895 (6110), RPC protocol 2.0.0" in result.stderr
    types = [e["type"] for e in recorded_events(tmp_path)]
    assert "ServerStarting" not in types and "JobStarted" not in types


def test_unreachable_node(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2)
    text = profile.read_text().replace(f'host = "{clean_rig.nodes[1].address}"',
                                       f'host = "10.{clean_rig.net}.0.77"\nconnect_timeout_s = 2')
    profile.write_text(text)
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 3
    assert "error: node n2:" in result.stderr and "10.201.0.77" in result.stderr
    assert "fix:" in result.stderr and "Traceback" not in result.stderr


def test_wrong_host_key(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    lines = clean_rig.known_hosts.read_text().splitlines()
    # node 2's line gets node 1's key: a changed host key.
    lines[1] = lines[1].split()[0] + " " + " ".join(lines[0].split()[1:])
    wrong.write_text("\n".join(lines) + "\n")
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2)
    profile.write_text(profile.read_text().replace(str(clean_rig.known_hosts), str(wrong)))
    result = rpctui(tmp_path, "check", str(profile))
    assert result.returncode == 3
    assert "node n2: the host key of root@" in result.stderr
    assert "ssh-keyscan" in result.stderr and "not trusted" in result.stderr


def test_missing_binary(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", model=model, servers=2,
                          bin_dir={0: bins["mainline"], 1: "/opt/no-llama-here"})
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 3
    assert "no rpc-server or ggml-rpc-server in /opt/no-llama-here on node n2" in result.stderr
    assert "fix: set bin_dir" in result.stderr


def test_missing_model(clean_rig: Rig, bins, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                          model="/models/not here/x.gguf", servers=2)
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 3
    assert "model /models/not here/x.gguf not found on main node n1" in result.stderr


@pytest.mark.parametrize("keep", [600, 3_000_000], ids=["header-cut", "data-cut"])
def test_cut_short_model_is_one_clear_error_everywhere(clean_rig: Rig, bins, model,
                                                      tmp_path: Path, keep: int) -> None:
    """A GGUF cut short (an interrupted download): plan, check and run all refuse it with the
    same message and exit 3 (issue 9: plan printed a traceback, run left it to llama.cpp).
    The main node is remote: its header and size are read over SSH."""
    cut = tmp_path / "cut model.gguf"
    cut.write_bytes(Path(model).read_bytes()[:keep])
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                          model=str(cut), servers=2)
    for command in ("plan", "check", "run"):
        result = rpctui(tmp_path, command, str(profile))
        assert result.returncode == 3, (command, result.stderr)
        assert f"error: model on n1: {cut} is cut short" in result.stderr, (command, result.stderr)
        assert "fix: the file is incomplete or damaged" in result.stderr
        assert "Traceback" not in result.stderr
    assert "ServerStarting" not in {e["type"] for e in recorded_events(tmp_path)}


def test_port_already_taken(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    node = clean_rig.nodes[1]
    listener = subprocess.Popen(node.exec_argv([
        sys.executable, "-c",
        # SO_REUSEADDR: a server an earlier test killed mid-connection leaves TIME_WAIT here
        f"import socket,time;s=socket.socket();"
        f"s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(('{node.address}',50052));s.listen();"
        f"print('up',flush=True);time.sleep(60)"]), stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
        profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                              model=model, servers=2)
        result = rpctui(tmp_path, "run", str(profile))
    finally:
        listener.kill()
        listener.wait()
    assert result.returncode == 3
    assert "port 50052 on node n2 is already in use by python" in result.stderr, result.stderr
    assert f"(pid {listener.pid}" in result.stderr or "(pid " in result.stderr


def test_a_worker_already_serving_another_client_is_named(clean_rig: Rig, bins, model,
                                                           tmp_path: Path) -> None:
    """Someone started an rpc-server on n2 by hand and a llama-bench on n1 is using it: rpctui
    refuses before starting anything, naming that server's pid and its client's address."""
    n1, n2 = clean_rig.nodes[0], clean_rig.nodes[1]
    bin_dir = Path(bins["mainline"])
    server = subprocess.Popen(n2.exec_argv([str(bin_dir / "ggml-rpc-server"), "-H", n2.address,
                                            "-p", "50052"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        wait_port(n2, 50052, state="listening")
        client = subprocess.Popen(n1.exec_argv([
            str(bin_dir / "llama-bench"), "-m", model, "--rpc", f"{n2.address}:50052",
            "-ngl", "99", "-p", "512", "-n", "128", "-r", "100"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(n2, 50052, state="established")
        profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                              model=model, servers=2)
        result = rpctui(tmp_path, "run", str(profile))
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert result.returncode == 3, result.stderr
    assert (f"port 50052 on node n2 is held by an rpc-server rpctui did not start "
            f"(ggml-rpc-server, pid {server.pid}), serving a client at {n1.address} now"
            in result.stderr), result.stderr
    assert f"kill {server.pid} on n2" in result.stderr
    assert "job on n1" not in result.stderr


def wait_port(node, port: int, state: str, timeout: float = 30.0) -> None:
    """Until ``ss`` in the node shows a TCP socket on ``port`` in ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(node.exec_argv(["ss", "-Htn", "state", state, "( sport = :"
                                             f"{port} )"]), capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"no {state} socket on port {port} of {node.address}")


def test_a_second_rpctui_on_the_same_cluster_refuses_naming_the_first(clean_rig: Rig, bins,
                                                                     model,
                                                                     tmp_path: Path) -> None:
    """While one rpctui runs a job, a second on the same profile stops at the preflight,
    naming the first (its profile, host and pid); the first runs on undisturbed."""
    import socket

    first = start_long_run(clean_rig, bins, model, tmp_path, servers=2, repetitions=50)
    try:
        second = rpctui(tmp_path, "check", str(tmp_path / "p.toml"))
        still_running = first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)  # the first was not disturbed: it ends as asked
        _, err = first.communicate(timeout=120)
    assert still_running
    assert second.returncode == 3, second.stderr
    assert (f"port 50052 on node n2 is held by an rpc-server of another rpctui (profile rig "
            f"from {socket.gethostname()}, rpctui pid {first.pid}") in second.stderr, second.stderr
    assert "fix: let that run end" in second.stderr
    assert first.returncode == 130 and "teardown: every process ended" in err, err[-2000:]


def test_server_out_of_memory_is_attributed(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2)
    # Only n2's server is capped (ulimit -v 24 MiB): its weights do not fit.
    text = profile.read_text()
    n2 = text.index('name = "n2"')
    text = text[:n2] + text[n2:].replace("threads = 1", "threads = 1\naddress_space_limit_mib = 24", 1)
    profile.write_text(text)
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 1, result.stderr
    assert "that server ran out of memory (node n2)" in result.stderr
    finished = [e for e in recorded_events(tmp_path) if e["type"] == "JobFinished"][-1]
    assert finished["culprit"] == "n2"


def start_long_run(rig: Rig, bins, model: str, tmp_path: Path, servers: int,
                   repetitions: int, server_extra: dict[str, object] | None = None,
                   node_extra: dict[str, object] | None = None) -> subprocess.Popen[str]:
    """`rpctui run` of a bench long enough to act on, returned once its job has started."""
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [512]\ngen_tokens = [128]\n'
           f'repetitions = {repetitions}\n')
    profile = rig_profile(rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=servers, job=job, server_extra=server_extra,
                          node_extra=node_extra)
    proc = subprocess.Popen([sys.executable, "-m", "rpctui.cli.main", "run", str(profile)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=rpctui_env(tmp_path), cwd=ROOT)
    try:
        wait_for_line(proc, "job on n1")
    except BaseException:
        proc.kill()
        raise
    return proc


def signal_servers_during_job(rig: Rig, bins, model: str, tmp_path: Path,
                              sig: signal.Signals) -> tuple[subprocess.Popen[str], str, int]:
    """A long run over two servers; a second in, every process on n2 whose command line names
    ggml-rpc-server gets ``sig`` (what `pkill -f ggml-rpc-server` does). Returns the finished
    run, its stderr, and how many processes were signalled."""
    import os

    proc = start_long_run(rig, bins, model, tmp_path, servers=2, repetitions=20)
    try:
        time.sleep(1.0)
        victims = [p for p in rig.node_pids(rig.nodes[1])
                   if "ggml-rpc-server" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # ended already: the one signalled before it was its parent or session
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, err, len(victims)


def test_server_killed_during_job(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    proc, err, victims = signal_servers_during_job(clean_rig, bins, model, tmp_path, signal.SIGKILL)
    assert victims, "the server on n2 was not running"
    assert proc.returncode == 1, err
    assert f"server {clean_rig.nodes[1].address}:50052 on node n2 was killed by SIGKILL; n2's " \
           f"kernel log shows no OOM kill" in err


def test_server_ended_by_another_signal_is_named(clean_rig: Rig, bins, model,
                                                 tmp_path: Path) -> None:
    """`pkill -f ggml-rpc-server` on a node hits the SSH session's own process too: sshd then
    reports exit-signal TERM, which must read as SIGTERM, not as SIGKILL or an OOM (issue 9)."""
    proc, err, victims = signal_servers_during_job(clean_rig, bins, model, tmp_path, signal.SIGTERM)
    assert victims >= 2, "expected the session's process and the server on n2"
    assert proc.returncode == 1, err
    assert (f"server {clean_rig.nodes[1].address}:50052 on node n2 was ended by SIGTERM"
            in err), err
    assert "SIGKILL" not in err and "OOM" not in err
    exits = [e for e in recorded_events(tmp_path) if e["type"] == "ServerExited"]
    assert [e["rc"] for e in exits if e["node"] == "n2"] == [143]


def test_sigterm_tears_everything_down(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    proc = start_long_run(clean_rig, bins, model, tmp_path, servers=4, repetitions=50)
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: every process rpctui started was ended" in err
    gone = sorted(e["what"].split()[0] for e in recorded_events(tmp_path)
                  if e["type"] == "ProcessGone")
    assert gone == ["job"] + ["rpc-server"] * 4 + ["sampler"] * 4


def test_killed_rpctui_leaves_nothing(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    """Even SIGKILL of rpctui ends everything: the launcher watches the connection."""
    proc = start_long_run(clean_rig, bins, model, tmp_path, servers=2, repetitions=50)
    try:
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # clean_rig asserts, after the test, that nothing is left on any node.


def test_flag_the_build_lacks_is_refused_before_launch(clean_rig: Rig, bins, model,
                                                       tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, server_extra={"extra_args": ["--bogus"]})
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 3
    assert ("node n1: llama.cpp mainline build 0c1e570 (11312) ggml-rpc-server has no flag "
            "--bogus") in result.stderr
    types = [e["type"] for e in recorded_events(tmp_path)]
    assert "ServerStarting" not in types


def test_server_that_dies_at_start_is_reported_with_its_last_lines(clean_rig: Rig, bins, model,
                                                                    tmp_path: Path) -> None:
    # 4 MiB of address space is too little to even load the binary.
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, server_extra={"address_space_limit_mib": 4})
    result = rpctui(tmp_path, "run", str(profile))
    assert result.returncode == 1
    assert "exited during start-up" in result.stderr
    assert "last lines:" in result.stderr
    exited = [e for e in recorded_events(tmp_path) if e["type"] == "ServerExited"]
    assert exited and all(e["rc"] != 0 for e in exited)


def test_ssh_config_alias_is_honoured(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    """host = an alias; user, port, key and known_hosts come from ~/.ssh/config."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    node = clean_rig.nodes[1]
    (home / ".ssh" / "config").write_text(
        f"Host second-box\n  HostName {node.address}\n  Port {node.ssh_port}\n  User root\n"
        f"  IdentityFile {clean_rig.client_key}\n  UserKnownHostsFile {clean_rig.known_hosts}\n")
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2)
    text = profile.read_text()
    block = text[text.index('name = "n2"'):]
    block_new = block.replace(f'host = "{node.address}"', 'host = "second-box"', 1)
    for line in ('user = "root"\n', f"ssh_port = {node.ssh_port}\n",
                 f'key = "{clean_rig.client_key}"\n', f'known_hosts = "{clean_rig.known_hosts}"\n'):
        block_new = block_new.replace(line, "", 1)
    profile.write_text(text.replace(block, block_new))
    env = rpctui_env(tmp_path)
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = str(Path.home() / ".cache")
    result = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "check", str(profile)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "| n2 " in result.stdout and "FAIL" not in result.stdout


def test_loopback_fallback_rig_without_namespaces(bins, model, tmp_path: Path) -> None:
    """What a non-root user gets: one sshd per loopback address, same rpctui."""
    rig = Rig(2, prefix="rl", net=202, namespaces=False).up()
    try:
        profile = rig_profile(rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                              servers=2)
        result = rpctui(tmp_path, "run", str(profile), "--format", "json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert rows and all(r["servers"] == 2 for r in rows)
        assert "127.0.202.2:50052" in result.stderr
        assert rig.leftovers() == {}
    finally:
        rig.down()


def test_missing_key_file_is_named(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2)
    profile.write_text(profile.read_text().replace(str(clean_rig.client_key),
                                                   str(tmp_path / "no-such-key"), 1))
    result = rpctui(tmp_path, "check", str(profile))
    assert result.returncode == 3
    assert f"node n1: key file {tmp_path / 'no-such-key'} does not exist" in result.stderr


def test_more_backends_than_llama_cpp_takes_is_refused(clean_rig: Rig, bins, model,
                                                      tmp_path: Path) -> None:
    """16 servers + the CPU is 17 backends: llama.cpp would abort (GGML_SCHED_MAX_BACKENDS)."""
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=16, per_node=4)
    result = rpctui(tmp_path, "check", str(profile))
    assert result.returncode == 3
    assert ("the job would use 17 backends (16 RPC devices, 0 local GPUs and the CPU); "
            "llama.cpp's scheduler takes at most 16") in result.stderr


def test_sweep_from_the_local_baseline_gives_ratios(clean_rig: Rig, bins, model,
                                                    tmp_path: Path) -> None:
    """Server count 0 runs the job on the main node alone; every step's t/s is then given as a
    ratio to it (seed 000's "RPC Scaling" tables), in the results and the report."""
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, extra="[sweep]\nservers = [0, 2]\n")
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["servers"], r["test"]) for r in rows] == [(0, "pp32"), (0, "tg8"), (2, "pp32"),
                                                        (2, "tg8")]
    assert [r["vs_local"] for r in rows[:2]] == [1.0, 1.0]
    for r in rows[2:]:
        base = next(b for b in rows[:2] if b["test"] == r["test"])
        assert r["vs_local"] == round(r["avg_ts"] / base["avg_ts"], 3)
    jobs = [e for e in recorded_events(tmp_path) if e["type"] == "JobStarted"]
    assert "--rpc" not in jobs[0]["argv"] and "--rpc" in jobs[1]["argv"]
    report = rpctui(tmp_path, "report", "last")
    assert report.returncode == 0, report.stderr
    assert "ratios against the local baseline, the main node alone" in report.stdout
    assert "| 1 node | 2 nodes |" in report.stdout


def test_sweep_over_a_grid_of_job_and_server_settings(clean_rig: Rig, bins, model,
                                                      tmp_path: Path) -> None:
    """A grid over a job setting (the micro-batch) and a server setting (the tensor cache):
    every combination is a step of one run; the servers restart only when theirs change."""
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, extra="[sweep.job]\nubatch_size = [16, 32]\n"
                          "[sweep.server]\ncache = [false, true]\n")
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["setup"] for r in rows[::2]] == [
        "ubatch_size=16 server.cache=off", "ubatch_size=32 server.cache=off",
        "ubatch_size=16 server.cache=on", "ubatch_size=32 server.cache=on"]
    events = recorded_events(tmp_path)
    jobs = [e for e in events if e["type"] == "JobStarted"]
    assert [j["argv"][j["argv"].index("-ub") + 1] for j in jobs] == ["16", "32", "16", "32"]
    starts = [e for e in events if e["type"] == "ServerStarting"]
    assert [("-c" in s["argv"]) for s in starts] == [False, False, True, True]
    exits = [e for e in events if e["type"] == "ServerExited"]
    assert exits and all(e["expected"] for e in exits)
    compared = rpctui(tmp_path, "compare", "last:0", "last:3")
    assert compared.returncode == 0, compared.stderr
    assert "ubatch_size=32 server.cache=on" in compared.stdout


def test_a_link_cut_mid_generation_ends_the_job_naming_the_node(clean_rig: Rig, bins, model,
                                                                tmp_path: Path) -> None:
    """n2's link goes down while llama-bench generates through it (llama.cpp's RPC has no
    timeout: the job would hang forever). The SSH keepalives (every second here: keepalive_s)
    notice within their bound, the job is ended, exit 1, the diagnosis names n2; once the link
    is back, nothing is left."""
    from rpctui.engine.processes import RECONNECT_TIMEOUT_S
    from rpctui.hosts.ssh import KEEPALIVE_MISSES

    link = f"{clean_rig.prefix}v{clean_rig.nodes[1].index}"
    first = start_long_run(clean_rig, bins, model, tmp_path, servers=2, repetitions=50,
                           node_extra={"keepalive_s": 1.0})
    try:
        time.sleep(1.0)
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        cut = time.monotonic()
        _, err = first.communicate(timeout=120)
        took = time.monotonic() - cut
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        if first.poll() is None:
            first.kill()
    print(f"job ended {took:.1f} s after the link was cut")
    assert first.returncode == 1, err[-3000:]
    assert f"lost node n2: no answer to SSH keepalives for {KEEPALIVE_MISSES} s" in err
    assert "the job was ended, since llama.cpp's RPC would have waited for it forever" in err
    # noticed (keepalives), the job ended, then teardown's one try to reach n2 again
    assert took < 1.0 * (KEEPALIVE_MISSES + 1) + RECONNECT_TIMEOUT_S + 4, took
    # The node's processes end when its sshd sees the connection gone (the FIN rpctui's
    # machine retransmits arrives once the link is back): the rig's leftover check waits.
    assert clean_rig.leftovers(settle_s=60) == {}
