"""Widgets: a card per node, the cluster grid, the job view. They get ClusterState by
attribute and draw it; they ask nothing of any node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, RichLog, Static

from rpctui.history.store import result_rows
from rpctui.run.report import human_bytes, plan_check_lines
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
    text = Text()
    for i in range(BAR):
        ch = "█" if i < full else "░"
        style = "cyan" if progress else (
            "red" if frac >= 0.9 else ("yellow" if frac >= 0.75 else "green"))
        if i == mark:
            text.append("▲", style="bold magenta")
        else:
            text.append(ch, style=style if i < full else "dim")
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


class NodeCard(Static, can_focus=True):
    """One node: state, build, memory bars with the planned need marked, network, loads.
    Enter or a click opens the node's detail."""

    DEFAULT_CSS = """
    NodeCard { border: round $primary; padding: 0 1; height: auto; min-height: 6; }
    NodeCard:focus { border: double $accent; }
    NodeCard.failed { border: round $error; }
    """

    @dataclass
    class Selected(Message):
        node: str

    def __init__(self, name: str) -> None:
        super().__init__()
        self.node_name = name
        self._drawn: tuple[object, ...] | None = None
        self._lines = -1

    def on_click(self) -> None:
        self.post_message(self.Selected(self.node_name))

    def key_enter(self) -> None:
        self.post_message(self.Selected(self.node_name))

    def show(self, state: ClusterState) -> None:
        name = self.node_name
        # State records are replaced, never changed, so identities tell what moved; a card
        # whose inputs are the same objects as last time is not drawn again.
        inputs = (state.nodes.get(name), state.telemetry.get(name), state.job.status,
                  state.teardown, state.main, state.plan, len(state.warnings),
                  tuple(s for s in state.servers.values() if s.node == name),
                  tuple(lp for lp in state.loads.values() if lp.node == name))
        if self._drawn is not None and len(inputs) == len(self._drawn) and all(
                a is b for a, b in zip(inputs, self._drawn, strict=True)):
            return
        self._drawn = inputs
        self.set_class(node_status(state, name) == "failed", "failed")
        text = render_node(state, name)
        lines = text.plain.count("\n")
        # A new layout only when the card grows or shrinks: most updates only repaint it.
        self.update(text, layout=lines != self._lines)
        self._lines = lines


class ClusterView(VerticalScroll):
    """A card per node; cards wrap into as many columns as the terminal allows."""

    def __init__(self) -> None:
        super().__init__(id="cluster")
        self.cards: dict[str, NodeCard] = {}

    def on_resize(self) -> None:
        # Cards wrap: as many 70-column cards side by side as fit (1 to 4).
        self.styles.grid_size_columns = max(1, min(4, self.size.width // 70))

    def reset(self) -> None:
        for card in self.cards.values():
            card.remove()
        self.cards = {}

    def show(self, state: ClusterState) -> None:
        for name in state.nodes:
            if name not in self.cards:
                card = NodeCard(name)
                self.cards[name] = card
                self.mount(card)
            self.cards[name].show(state)


def scaling_lines(rows: list[dict[str, Any]]) -> list[str]:
    """For a sweep: t/s against server count per test, as seed 000's table, with a bar."""
    counts = sorted({r["servers"] for r in rows})
    if len(counts) < 2:
        return []
    out = ["scaling (t/s by servers):"]
    for test in dict.fromkeys(r["test"] for r in rows):
        series = {r["servers"]: r["avg_ts"] for r in rows if r["test"] == test and r["avg_ts"]}
        top = max(series.values(), default=0) or 1
        for n in counts:
            if n in series:
                out.append(f"  {test:>10s} x{n:<2d} {series[n]:10.2f} {'█' * round(20 * series[n] / top)}")
    return out


class JobView(Vertical):
    """The exact command lines, the live log with a filter, the results table."""

    def compose(self) -> ComposeResult:
        yield Static(id="command")
        yield DataTable(id="results", zebra_stripes=True)
        yield Input(placeholder="filter the log (text or node)", id="log-filter")
        yield RichLog(id="log", max_lines=5000, wrap=False, markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("servers", "nodes", "test", "t/s", "backend", "build")
        self.rows_shown = 0
        self.log_filter = ""

    def reset(self) -> None:
        self.query_one(DataTable).clear()
        self.query_one(RichLog).clear()
        self.rows_shown = 0

    def show(self, state: ClusterState) -> None:
        commands = []
        for s in sorted(state.servers.values(), key=lambda s: s.endpoint):
            commands.append(f"# {s.node} {s.endpoint} ({s.status})")
        if state.job.argv:
            commands.append(f"# job on {state.main}\n" + " ".join(state.job.argv))
        rows = result_rows(state)
        scaling = scaling_lines(rows)
        if scaling:
            commands += ["", *scaling]
        plan = plan_check_lines(state)
        if plan:
            commands += ["", *plan]
        self.query_one("#command", Static).update("\n".join(commands) or "no job yet")
        table = self.query_one(DataTable)
        for r in rows[self.rows_shown:]:
            table.add_row(str(r["servers"]), r["nodes"], r["test"], r["t/s"], r["backend"],
                          r["build"])
        self.rows_shown = len(rows)

    def add_log(self, lines: list[str]) -> None:
        log = self.query_one(RichLog)
        for line in lines:
            if not self.log_filter or self.log_filter in line:
                log.write(line)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.log_filter = event.value
