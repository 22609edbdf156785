"""One run, summed up from its events: what the run database stores about it.

Pure: events in, a :class:`RunRecord` out. The same function serves a run that just ended
and a recording imported later, so both give the same rows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from rpctui.llama.bench import bench_label
from rpctui.run import events as ev
from rpctui.run.state import ClusterState, fold_all

#: flags of rpc-server worth a column of their own (the rest stay in the argv)
_SERVER_FLAGS = {"-H": "bind", "--host": "bind", "-p": "port", "--port": "port",
                 "-d": "devices", "--device": "devices", "-m": "mem_mib", "--mem": "mem_mib",
                 "-t": "threads", "--threads": "threads"}


@dataclass
class RunRecord:
    """Rows for each table of the run database, for one run (history/db.py writes them)."""

    run: dict[str, Any]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: (llama-bench's row as it printed it, rpctui's: step, servers, nodes, test)
    bench: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    plan: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    #: one row per server and test: its share of the time per token (the test's figures repeated)
    breakdown: list[dict[str, Any]] = field(default_factory=list)


def model_of(argv: tuple[str, ...]) -> str:
    """The model file a job command line names (-m / --model), as its file name."""
    for flag in ("-m", "--model"):
        if flag in argv[:-1]:
            return os.path.basename(argv[argv.index(flag) + 1])
    return ""


def server_flags(argv: tuple[str, ...]) -> dict[str, Any]:
    """bind, port, devices, mem_mib, threads and cache, read from an rpc-server command line."""
    out: dict[str, Any] = {"bind": "", "port": None, "devices": "", "mem_mib": None,
                           "threads": None, "cache": int("-c" in argv or "--cache" in argv)}
    for i, arg in enumerate(argv[:-1]):
        name = _SERVER_FLAGS.get(arg)
        if name is None:
            continue
        value = argv[i + 1]
        out[name] = int(value) if name in ("port", "mem_mib", "threads") and value.isdigit() else value
    return out


def status_of(exit_code: int | None) -> str:
    """The outcome in words: ok, failed (exit N) or interrupted (no end recorded)."""
    if exit_code is None:
        return "interrupted"
    return "ok" if exit_code == 0 else "failed"


def summarize(events: list[ev.Event], recording: str = "",
              state: ClusterState | None = None) -> RunRecord:
    """The run database's rows for one run's events; ``state`` is those events folded, when
    the caller has it already (a run that just ended: folding again is most of the cost).
    Folding leaves the samples out: they only feed the live telemetry, and the peaks below
    are read from them directly (a 10-minute 32-node run has 38,000 of them)."""
    state = state or fold_all([e for e in events if not isinstance(e, ev.NodeSample)])
    started = next((e for e in events if isinstance(e, ev.RunStarted)), ev.RunStarted())
    finished = next((e for e in reversed(events) if isinstance(e, ev.RunFinished)), None)
    jobs = [e for e in events if isinstance(e, ev.JobStarted)]
    model = next((m for m in (model_of(j.argv) for j in jobs) if m), "")
    exit_code = finished.exit_code if finished else None

    rec = RunRecord(run={})
    run_id = state.run_id or started.run_id

    # Steps: one per job (a sweep has several), with how each ended.
    ends = {e.step: e for e in events if isinstance(e, ev.JobFinished)}
    for j in jobs:
        end = ends.get(j.step)
        rec.steps.append({"step": j.step, "node": j.node, "kind": j.kind, "argv": list(j.argv),
                          "servers": list(j.servers), "rc": end.rc if end else None,
                          "elapsed_s": end.elapsed_s if end else None,
                          "diagnosis": end.diagnosis if end else "", "setup": j.setup})

    # Results: llama-bench's own row, and which servers (nodes) ran it.
    step_servers = {j.step: j.servers for j in jobs}
    for r in state.results:
        servers = step_servers.get(r.step, ())
        nodes = sorted({state.servers[s].node for s in servers if s in state.servers})
        rec.bench.append((r.row, {"step": r.step, "n_servers": r.n_servers, "nodes": ",".join(nodes),
                                  "test": bench_label(r.row)}))

    # Nodes, as probed, with the link their RPC traffic takes.
    links = {e.node: e for e in events if isinstance(e, ev.NodeProbed) and e.link}
    for name, node in state.nodes.items():
        link = links.get(name)
        rec.nodes.append({"node": name, "hostname": node.hostname, "flavour": node.flavour,
                          "build": node.build, "protocol": node.protocol,
                          "devices": [d.name for d in node.devices],
                          "backends": sorted({re.sub(r"\d+$", "", d.name) for d in node.devices}),
                          "mem_total_mib": node.mem_total_mib,
                          "link": link.link if link else None,
                          "link_mbps": link.link_mbps if link else None,
                          "mtu": link.mtu if link else None})

    # Servers: their flags, how they loaded, whether the tensor cache was already warm.
    argvs = {e.endpoint: e.argv for e in events if isinstance(e, ev.ServerStarting)}
    loads: dict[str, list[ev.LoadFinished]] = {}
    for lf in state.loads_finished:
        loads.setdefault(lf.endpoint, []).append(lf)
    used: dict[str, ev.CacheUsed] = {}  # each folder's first report: the first job's load
    for e in events:
        if isinstance(e, ev.CacheUsed) and e.weights > 0:
            for ep in e.endpoints:
                used.setdefault(ep, e)
    for endpoint, server in state.servers.items():
        argv = argvs.get(endpoint, ())
        flags = server_flags(argv)
        done = loads.get(server.endpoint, []) or loads.get(endpoint, [])
        cache_state = None
        first = min(done, key=lambda lf: lf.step) if done else None
        report = used.get(server.endpoint) or used.get(endpoint)
        if flags["cache"] and report is not None:
            # what the load found in the cache, by the weights it sent by hash
            cache_state = ("warm" if report.found == report.weights else
                           "cold" if report.found == 0 else "partly warm")
        elif flags["cache"] and first is not None and first.expected_bytes:
            # Recordings from before the reports: warm when the first load moved clearly less
            # than the model bytes the server holds, the rest coming from its cache (a cold
            # load moves them all, plus the protocol's overhead).
            cache_state = "warm" if first.moved_bytes < 0.9 * first.expected_bytes else "cold"
        rec.servers.append({"endpoint": endpoint, "node": server.node, "argv": list(argv),
                            **flags, "cache_state": cache_state, "exposed": int(server.exposed),
                            "transport": server.transport,
                            "status": server.status, "rc": server.rc, "ready_s": server.ready_s,
                            "load_s": sum(lf.seconds for lf in done) if done else None,
                            "load_bytes": sum(lf.moved_bytes for lf in done) if done else None})

    # Peak memory per node and device, from the samples.
    peaks: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if not isinstance(e, ev.NodeSample):
            continue
        if e.mem_total_mib and e.mem_available_mib is not None:
            _peak(peaks, e.node, "RAM", e.mem_total_mib - e.mem_available_mib, e.mem_total_mib)
        for g in e.gpus:
            if g.vram_used_mib is not None:
                _peak(peaks, e.node, f"VRAM {g.name}", g.vram_used_mib, g.vram_total_mib)
            if g.gtt_used_mib is not None:
                _peak(peaks, e.node, f"GTT {g.name}", g.gtt_used_mib, g.gtt_total_mib)
    rec.memory = [{"node": n, "device": d, "peak_mib": v[0], "total_mib": v[1] or None}
                  for (n, d), v in peaks.items()]

    # What went wrong or nearly did.
    for e in events:
        if isinstance(e, ev.OomRisk):
            rec.problems.append({"t": e.t, "node": e.node, "kind": f"oom-{e.kind or 'risk'}",
                                 "message": e.message})
        elif isinstance(e, ev.NodeFailed):
            rec.problems.append({"t": e.t, "node": e.node, "kind": "node-failed",
                                 "message": f"{e.message} (fix: {e.fix})" if e.fix else e.message})
        elif isinstance(e, ev.ServerExited) and not e.expected:
            rec.problems.append({"t": e.t, "node": e.node, "kind": "server-exited",
                                 "message": f"{e.endpoint} exited {e.rc}: "
                                            + (e.tail[-1] if e.tail else "")})
        elif isinstance(e, ev.JobFinished) and e.rc != 0:
            rec.problems.append({"t": e.t, "node": e.culprit, "kind": "job-failed",
                                 "message": e.diagnosis or f"exit {e.rc}"})

    # The plan next to what llama.cpp allocated.
    for check in state.plan_checks:
        for row in check.rows:
            rec.plan.append({"step": check.step, "device": row.device,
                             "model_planned_mib": row.model_planned_mib,
                             "model_allocated_mib": row.model_allocated_mib,
                             "kv_planned_mib": row.kv_planned_mib,
                             "kv_allocated_mib": row.kv_allocated_mib})

    # The link test before the servers started, and where each token's time went.
    flags = dict(state.link_flags)
    for tested in state.links.values():
        rec.links.append({"node": tested.node, "main": tested.main, "endpoint": tested.endpoint,
                          "rtt_ms": tested.rtt_ms, "rtt_min_ms": tested.rtt_min_ms,
                          "to_mbps": tested.to_mbps, "from_mbps": tested.from_mbps,
                          "seconds": tested.seconds, "interface": tested.interface,
                          "link_mbps": tested.link_mbps, "mtu": tested.mtu,
                          "flag": flags.get(tested.node)})
    for b in state.breakdowns:
        for part in b.parts:
            rec.breakdown.append({"step": b.step, "test": b.test, "phase": b.phase,
                                  "tokens": b.tokens, "ms_per_token": b.ms_per_token,
                                  **part._asdict(), "main_ms": b.main_ms,
                                  "bottleneck": b.bottleneck})

    best: dict[str, float] = {}
    for result, _ in rec.bench:
        n_prompt, n_gen = int(result.get("n_prompt") or 0), int(result.get("n_gen") or 0)
        kind = "pp" if n_prompt and not n_gen else ("tg" if n_gen and not n_prompt else "")
        avg = result.get("avg_ts")
        if kind and isinstance(avg, (int, float)):
            best[kind] = max(best.get(kind, 0.0), float(avg))
    ram_peaks = [m["peak_mib"] for m in rec.memory]
    rec.run = {
        "run_id": run_id, "started": started.wall_time,
        "duration_s": max((e.t for e in events), default=0.0),
        "profile": started.profile_name or state.profile, "profile_path": started.profile,
        "command": started.command, "model": model, "main": started.main,
        "n_nodes": len(started.nodes) or len(state.nodes),
        "n_servers": len(started.servers) or len(state.servers),
        "status": status_of(exit_code), "exit_code": exit_code,
        "message": finished.message if finished else "",
        "builds": ",".join(sorted({n.build for n in state.nodes.values() if n.build})),
        "pp_ts": best.get("pp"), "tg_ts": best.get("tg"),
        "peak_mib": max(ram_peaks) if ram_peaks else None,
        "n_results": len(rec.bench), "n_problems": len(rec.problems),
        "recording": recording, "schema": started.schema,
    }
    return rec


def _peak(peaks: dict[tuple[str, str], list[float]], node: str, device: str, used: float,
          total: float | None) -> None:
    now = peaks.setdefault((node, device), [0.0, 0.0])
    now[0] = max(now[0], used)
    now[1] = max(now[1], total or 0.0)
