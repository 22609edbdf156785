"""The job tab: commands, results, sweep scaling, the plan check and a filterable log."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Input, RichLog, Static
from textual_plotext import PlotextPlot

from rpctui.history.store import result_rows
from rpctui.profiler.breakdown import render as render_breakdown
from rpctui.profiler.links import render as render_links
from rpctui.run.report import plan_check_lines
from rpctui.run.state import ClusterState
from rpctui.tui.widgets.render import scaling_lines


class JobView(Vertical):
    """The exact command lines, the live log with a filter, the results table."""

    def compose(self) -> ComposeResult:
        yield Static(id="command")
        yield DataTable(id="results", zebra_stripes=True)
        yield PlotextPlot(id="scaling-chart")
        yield Input(placeholder="filter the log (text or node)", id="log-filter")
        yield RichLog(id="log", max_lines=5000, wrap=False, markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("servers", "nodes", "test", "t/s", "backend", "build")
        self.rows_shown = 0
        self.log_filter = ""
        self.command_text = ""
        self.query_one("#scaling-chart").display = False

    def reset(self) -> None:
        self.query_one(DataTable).clear()
        self.query_one(RichLog).clear()
        self.rows_shown = 0

    def show(self, state: ClusterState) -> None:
        commands = []
        if state.service is not None:
            svc = state.service
            commands += [f"llama-server {svc.state.upper()} at {svc.url} · restarts "
                         f"{svc.restarts}", f"  {svc.message}", ""]
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
        if state.links:
            commands += ["", "links from the main node:",
                         *render_links(list(state.links.values()), state.link_flags).splitlines()]
        if state.breakdowns:
            commands += ["", "where each token's time goes:", *render_breakdown(state.breakdowns)]
        text = "\n".join(commands) or "no job yet"
        if text != self.command_text:  # a new layout only when the line count changes
            layout = text.count("\n") != self.command_text.count("\n")
            self.query_one("#command", Static).update(text, layout=layout)
            self.command_text = text
        table = self.query_one(DataTable)
        for r in rows[self.rows_shown:]:
            table.add_row(str(r["servers"]), r["nodes"], r["test"], r["t/s"], r["backend"],
                          r["build"])
        if len(rows) != self.rows_shown:
            self._chart(rows)
        self.rows_shown = len(rows)

    def _chart(self, rows: list[dict[str, Any]]) -> None:
        """A sweep's t/s by server count, drawn once a second count has results."""
        counts = sorted({r["servers"] for r in rows})
        chart = self.query_one("#scaling-chart", PlotextPlot)
        chart.display = len(counts) > 1
        if len(counts) < 2:
            return
        plt = chart.plt
        plt.clear_data()
        plt.title("t/s by servers")
        for test in dict.fromkeys(r["test"] for r in rows):
            points = sorted((r["servers"], r["avg_ts"]) for r in rows
                            if r["test"] == test and r["avg_ts"])
            plt.plot([p[0] for p in points], [p[1] for p in points], label=test, marker="dot")
        plt.xticks(counts)
        plt.xlabel("servers")
        chart.refresh()

    def add_log(self, lines: list[str]) -> None:
        shown = [line for line in lines if not self.log_filter or self.log_filter in line]
        if shown:  # one write: each write is a layout of the screen
            self.query_one(RichLog).write(Text("\n".join(shown), no_wrap=True))

    def on_input_changed(self, event: Input.Changed) -> None:
        self.log_filter = event.value
