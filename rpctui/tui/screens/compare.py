"""Runs side by side, as `rpctui compare` prints them: metrics with spread, change and verdict,
then what differs and what explains it."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Label, Static

from rpctui.errors import UserError
from rpctui.history import db
from rpctui.history.compare import compare, differences, explain
from rpctui.tui.widgets.footer import KeyBar


class CompareScreen(Screen[None]):
    """Two runs or more (the first is the baseline): each metric, its change against the
    baseline and whether that is beyond the runs' own noise; below, what differs."""

    BINDINGS = [Binding("escape", "dismiss", "Back")]

    def __init__(self, runs: list[str]) -> None:
        super().__init__()
        conn = db.connect()
        try:
            self.subjects, self.rows = compare(conn, runs)
        finally:
            conn.close()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("\n".join(f"{chr(65 + i)}: {s.label}" for i, s in enumerate(self.subjects)))
        with VerticalScroll(id="compare"):
            yield DataTable(id="compare-table", zebra_stripes=True)
            yield Static(id="compare-why")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        heads = ["metric", *(chr(65 + i) for i in range(len(self.subjects)))]
        for i in range(1, len(self.subjects)):
            heads += [f"{chr(65 + i)} vs A", "verdict"]
        table.add_columns(*heads)
        for r in self.rows:
            cells = [r.metric, *r.values]
            for change, verdict in zip(r.changes, r.verdicts, strict=True):
                cells += [change, verdict]
            table.add_row(*cells)
        lines = []
        for i in range(1, len(self.subjects)):
            diff = differences(self.subjects[0], self.subjects[i])
            lines.append(f"{chr(65 + i)} against A: {explain(diff, self.rows, i)}.")
            for kind, items in diff.items():
                lines += [f"  {kind}: {item}" for item in items]
        self.query_one("#compare-why", Static).update("\n".join(lines), layout=True)


def open_compare(screen: Screen[Any], runs: list[str]) -> None:
    """Push the comparison, or say why it cannot be made."""
    try:
        screen.app.push_screen(CompareScreen(runs))
    except UserError as exc:
        screen.notify(f"{exc.message}\nfix: {exc.fix}", severity="error")
