"""One node in detail: memory and network over time, its processes, its servers' log."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, RichLog, Static
from textual_plotext import PlotextPlot

from rpctui.run.state import ClusterState
from rpctui.tui.widgets.footer import KeyBar
from rpctui.tui.widgets.render import render_node, sparkline


class NodeScreen(Screen[None]):
    """One node: its card, memory and network over time (charts drawn in the terminal by
    textual-plotext, Textualize's own plotting widget: it follows the app's theme and is kept
    in step with Textual), its processes, each server's full log."""

    BINDINGS = [Binding("escape", "dismiss", "Back")]

    def __init__(self, state: ClusterState, node: str, logs: list[str]) -> None:
        super().__init__()
        self.state, self.node, self.logs = state, node, logs

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static(render_node(self.state, self.node), id="node-card")
            yield Static(id="node-history")
            with Horizontal(id="node-charts"):
                yield PlotextPlot(id="node-memory-chart")
                yield PlotextPlot(id="node-network-chart")
            yield DataTable(id="node-procs")
            yield RichLog(id="node-log", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        tel = self.state.telemetry.get(self.node)
        history = tel.history if tel else ()
        used = [p.used_mib for p in history]
        lines = []
        if used:
            lines.append(f"memory in use over {history[-1].t - history[0].t:.0f} s: "
                         f"{sparkline(used, 60)}  peak {max(used):.0f} MiB")
            lines.append(f"rx over time: {sparkline([p.rx_per_s for p in history], 60)}")
            lines.append(f"tx over time: {sparkline([p.tx_per_s for p in history], 60)}")
        self.query_one("#node-history", Static).update("\n".join(lines) or "no samples")
        if len(history) > 1:
            t0 = history[0].t
            times = [p.t - t0 for p in history]
            memory = self.query_one("#node-memory-chart", PlotextPlot).plt
            memory.title("memory in use (GiB)")
            memory.plot(times, [p.used_mib / 1024 for p in history], label="used")
            memory.xlabel("seconds")
            memory.ylim(0, max(max(used) / 1024, 0.1) * 1.1)
            network = self.query_one("#node-network-chart", PlotextPlot).plt
            network.title("network (MiB/s)")
            network.plot(times, [p.rx_per_s / 2**20 for p in history], label="rx")
            network.plot(times, [p.tx_per_s / 2**20 for p in history], label="tx")
            network.xlabel("seconds")
        else:
            self.query_one("#node-charts").display = False
        table = self.query_one(DataTable)
        table.add_columns("server", "resident MiB", "CPU s", "GPU MiB")
        if tel and tel.sample:
            gpu = dict(tel.sample.gpu_procs)
            for p in tel.sample.procs:
                table.add_row(p.endpoint, f"{p.rss_mib:.1f}", f"{p.cpu_s:.1f}",
                              f"{gpu.get(p.endpoint, 0):.0f}")
        log = self.query_one(RichLog)
        for line in self.logs:
            log.write(line)
