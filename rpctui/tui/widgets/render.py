"""A node card's text, bars and sparklines, drawn from ClusterState (no widget state)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from rpctui.run.report import human_bytes
from rpctui.run.state import ClusterState

BAR = 24
SPARK = "▁▂▃▄▅▆▇█"


def node_status(state: ClusterState, name: str) -> str:
    """connecting, ready, loading, serving, failed, stopped (what the card's title says)."""
    node = state.nodes.get(name)
    if node is None:
        return "pending"
    if node.status == "failed":
        return "failed"
    servers = [s for s in state.servers.values() if s.node == name]
    if any(s.status == "failed" for s in servers):
        return "failed"
    if state.teardown in ("running", "done") or (servers and all(s.status == "stopped"
                                                                 for s in servers)):
        return "stopped"
    loads = [lp for lp in state.loads.values() if lp.node == name and lp.endpoint]
    if state.job.status == "running" and loads and any(lp.percent < 100 for lp in loads):
        return "loading"
    if state.job.status == "running" and (loads or name == state.main):
        return "serving"
    if servers and all(s.status == "ready" for s in servers):
        return "ready"
    return {"pending": "connecting", "connecting": "connecting"}.get(node.status, "connected")


STATUS_STYLE = {"failed": "bold red", "loading": "bold yellow", "serving": "bold green",
                "ready": "green", "stopped": "dim", "connecting": "cyan", "connected": "cyan"}


def _bar(used: float, total: float, need: float | None = None, progress: bool = False) -> Text:
    """A memory bar (green, yellow past 75 %, red past 90 %) with the planned need marked ▲,
    or a progress bar (cyan)."""
    frac = min(max(used / total, 0.0), 1.0) if total else 0.0
    full = round(frac * BAR)
    mark = round(min(need / total, 1.0) * (BAR - 1)) if need and total else None
    style = "cyan" if progress else ("red" if frac >= 0.9 else ("yellow" if frac >= 0.75 else "green"))
    # One span per run of cells, not one per cell: a card's lines are mostly bars, and every
    # span is a segment the compositor cuts and copies on each repaint.
    text = Text()
    for start, end, ch, cell_style in ((0, full, "█", style), (full, BAR, "░", "dim")):
        if mark is not None and start <= mark < end:
            text.append(ch * (mark - start), style=cell_style)
            text.append("▲", style="bold magenta")
            text.append(ch * (end - mark - 1), style=cell_style)
        else:
            text.append(ch * (end - start), style=cell_style)
    return text


def sparkline(values: list[float], width: int = 12) -> str:
    values = values[-width:]
    top = max(values) if values else 0
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(int(v / top * (len(SPARK) - 1)), len(SPARK) - 1)] for v in values)


def render_node(state: ClusterState, name: str) -> Text:
    node = state.nodes[name]
    status = node_status(state, name)
    t = Text()
    t.append(f"{name}", style="bold")
    t.append(f"  {node.hostname or ''}  ")
    t.append(f"[{status}]", style=STATUS_STYLE.get(status, ""))
    if name == state.main:
        t.append("  main", style="italic")
    t.append("\n")
    if node.build:
        devs = ", ".join(d.name for d in node.devices) or "no server"
        t.append(f"{node.flavour} {node.build} · RPC {node.protocol or '?'} · {devs}\n", style="dim")
    if node.message:
        t.append(f"{node.message}\n", style="red")
        if node.fix:
            t.append(f"fix: {node.fix}\n", style="yellow")
    tel = state.telemetry.get(name)
    need = None
    if state.plan:  # the plan's weights, KV and estimated compute on this node's devices
        compute = dict(state.plan.compute)
        need = sum(r.model_mib + r.kv_mib + compute.get(r.device, 0.0) for r in state.plan.rows
                   if r.node == name)
    sample = tel.sample if tel else None
    if sample and sample.mem_total_mib and tel and tel.used_mib is not None:
        t.append("RAM  ")
        t.append_text(_bar(tel.used_mib, sample.mem_total_mib, need if not sample.gpus else None))
        t.append(f" {100 * tel.used_mib / sample.mem_total_mib:3.0f}% "
                 f"{tel.used_mib / 1024:.1f}/{sample.mem_total_mib / 1024:.1f} GiB\n")
        for gname, _kind, used, total, gtt_used, gtt_total, util in sample.gpus:
            if used is not None and total:
                t.append("VRAM ")
                t.append_text(_bar(used, total, need))
                t.append(f" {used / 1024:.1f}/{total / 1024:.1f} GiB {gname[:18]}"
                         + (f" {util}%" if util is not None else "") + "\n")
            if gtt_used is not None and gtt_total:
                t.append("GTT  ")
                t.append_text(_bar(gtt_used, gtt_total))
                t.append(f" {gtt_used / 1024:.1f}/{gtt_total / 1024:.1f} GiB\n")
        rx = [p.rx_per_s for p in tel.history]
        tx = [p.tx_per_s for p in tel.history]
        t.append(f"net  rx {human_bytes(tel.rx_bytes_per_s):>9s}/s {sparkline(rx)}  "
                 f"tx {human_bytes(tel.tx_bytes_per_s):>9s}/s {sparkline(tx)}\n")
    elif need:
        t.append(f"plan {need:.0f} MiB\n", style="magenta")
    for s in sorted((s for s in state.servers.values() if s.node == name), key=lambda s: s.endpoint):
        lp = state.loads.get(s.endpoint)
        t.append(f"  {s.endpoint} ", style="bold")
        if s.transport == "ssh":
            t.append("via ssh ", style="dim")
        if s.status == "planned":  # configured, not started yet: what `s` will start
            t.append("not started", style="dim")
            share = planned_share(state, s.endpoint)
            if share is not None:
                t.append(f"  plan {share:.0f} MiB", style="magenta")
        else:
            t.append(s.status, style=STATUS_STYLE.get({"ready": "ready", "failed": "failed",
                                                       "stopped": "stopped"}.get(s.status, ""), ""))
        if lp is not None:
            t.append(f"  load {lp.percent:5.1f}% ")
            t.append_text(_bar(lp.percent, 100.0, progress=True)[: BAR // 2])
            if lp.rate_bytes_per_s:
                t.append(f" {human_bytes(lp.rate_bytes_per_s)}/s")
            if lp.eta_s:
                t.append(f" eta {lp.eta_s:.0f}s")
        if s.status == "failed" and s.tail:
            t.append(f"\n    {s.tail[-1][:70]}", style="red")
        t.append("\n")
    for w in state.warnings:
        if w.node == name:
            t.append(f"⚠ {w.message}\n", style="bold red")
    return t


def planned_share(state: ClusterState, endpoint: str) -> float | None:
    """MiB the plan puts on a server's devices (weights, KV, estimated compute); None before
    there is a plan."""
    if state.plan is None:
        return None
    compute = dict(state.plan.compute)
    devices = [r for r in state.plan.rows if r.device.endswith(f"[{endpoint}]")]
    return sum(r.model_mib + r.kv_mib + compute.get(r.device, 0.0) for r in devices)


def scaling_lines(rows: list[dict[str, Any]]) -> list[str]:
    """For a sweep: t/s against server count per test, as seed 000's table, with a bar."""
    counts = sorted({r["servers"] for r in rows})
    if len(counts) < 2:
        return []
    out = ["scaling (t/s by servers):"]
    for test in dict.fromkeys(r["test"] for r in rows):
        series = {r["servers"]: r["avg_ts"] for r in rows if r["test"] == test and r["avg_ts"]}
        local = {r["servers"]: r.get("x local", "") for r in rows if r["test"] == test}
        top = max(series.values(), default=0) or 1
        for n in counts:
            if n in series:
                bar = "█" * round(20 * series[n] / top)
                vs = f" {local[n]:>6s} local" if local.get(n) else ""
                out.append(f"  {test:>10s} x{n:<2d} {series[n]:10.2f}{vs} {bar}")
    return out
