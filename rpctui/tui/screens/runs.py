"""Past runs: the list (summarised off the UI thread), replay one, mark two to compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Header, Label

from rpctui.errors import UserError
from rpctui.history.store import list_runs, run_summary
from rpctui.tui.screens.compare import CompareScreen
from rpctui.tui.widgets.footer import KeyBar


class RunsScreen(Screen[Path | None]):
    """The run store: enter opens a run's replay; space marks two runs, c compares them."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Back"), Binding("space", "mark", "Mark"),
                Binding("c", "compare", "Compare marked")]

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.runs = list_runs(folder)
        self.marked: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"{len(self.runs)} recorded runs (enter: replay, space: mark, c: compare)")
        yield DataTable(id="runs", cursor_type="row")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "run", "profile", "when", "exit", "results")
        for path in self.runs:
            table.add_row("", path.stem, "", "", "", "", key=str(path))
        self.summarise()

    @work(thread=True, exit_on_error=False)
    def summarise(self) -> None:
        """Reading every recording takes a while with many runs: off the UI thread."""
        for i, path in enumerate(self.runs):
            try:
                s = run_summary(path)
            except UserError as exc:  # a recording from a newer rpctui: say so in its row
                s = {"profile": "", "when": "", "exit_code": "", "tps": [], "error": exc.message}
            self.app.call_from_thread(self._fill, i, s)

    def _fill(self, row: int, s: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        if "error" in s:
            table.update_cell_at(Coordinate(row, 2), "newer rpctui's format: not read")
            return
        for col, value in ((2, s["profile"]), (3, s["when"]), (4, str(s["exit_code"])),
                           (5, str(len(s["tps"])))):
            table.update_cell_at(Coordinate(row, col), value)

    def _current(self) -> Path | None:
        table = self.query_one(DataTable)
        if not self.runs:
            return None
        return self.runs[table.cursor_row]

    def action_mark(self) -> None:
        path = self._current()
        if path is None:
            return
        if path in self.marked:
            self.marked.remove(path)
        else:
            self.marked = (self.marked + [path])[-2:]
        table = self.query_one(DataTable)
        for i, p in enumerate(self.runs):
            table.update_cell_at(Coordinate(i, 0), "*" if p in self.marked else "")

    def action_compare(self) -> None:
        if len(self.marked) == 2:
            self.app.push_screen(CompareScreen(*self.marked))
        else:
            self.notify("mark two runs with space first")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(self._current())
