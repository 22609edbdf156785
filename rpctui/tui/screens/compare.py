"""Two runs side by side: results, load times, peak memory."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Label

from rpctui.history.store import compare_rows, run_summary
from rpctui.tui.widgets.footer import KeyBar


class CompareScreen(Screen[None]):
    """Two runs side by side: t/s, load time per server, peak memory per node."""

    BINDINGS = [Binding("escape", "dismiss", "Back")]

    def __init__(self, a: Path, b: Path) -> None:
        super().__init__()
        self.a, self.b = run_summary(a), run_summary(b)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"A: {self.a['run']}   B: {self.b['run']}")
        yield DataTable(id="compare")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("measure", "of", "A", "B", "B / A")
        for row in compare_rows(self.a, self.b):
            table.add_row(*row)
