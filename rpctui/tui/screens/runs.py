"""Past runs from the run database: sort, filter, replay one, mark two to compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Label

from rpctui.history import db
from rpctui.history.index import import_recordings
from rpctui.history.query import NUMERIC_COLUMNS, RUN_COLUMNS, find_runs, run_row
from rpctui.tui.screens.compare import open_compare
from rpctui.tui.widgets.footer import KeyBar

# The mark first, the run id last: the rest as `rpctui history` lists them.
COLUMNS = ("", *RUN_COLUMNS[1:], "run")


def _sort_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


class RunsScreen(Screen[Path | None]):
    """Every recorded run: enter replays it; a click on a heading sorts by it; typing in the
    filter keeps the rows that contain the text; space marks up to four runs, c compares them
    (the first marked is the baseline)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Back"), Binding("space", "mark", "Mark"),
                Binding("c", "compare", "Compare marked"), Binding("slash", "filter", "Filter")]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.marked: list[str] = []
        self.sorted_by: tuple[str, bool] = ("when (UTC)", True)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("reading the run history ...", id="runs-title")
        yield Input(placeholder="filter: profile, model, build, outcome ... (/)", id="runs-filter")
        yield DataTable(id="runs", cursor_type="row")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        table.focus()
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        """New recordings are imported first (a run from before the database, or one that
        crashed): off the UI thread, as that reads their files."""
        conn = db.connect()
        try:
            import_recordings(None, conn)
            runs = find_runs(conn)
        finally:
            conn.close()
        self.app.call_from_thread(self._loaded, runs)

    def _loaded(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.query_one("#runs-title", Label).update(
            f"{len(runs)} runs in {db.db_path()}  (enter: replay, space: mark, c: compare, "
            "click a heading: sort, /: filter)")
        self._show()

    def _show(self) -> None:
        text = self.query_one("#runs-filter", Input).value.lower()
        rows = [(run, [row[c] for c in COLUMNS[1:]])
                for run, row in ((run, run_row(run)) for run in self.runs)]
        if text:
            rows = [(run, cells) for run, cells in rows
                    if text in " ".join([*cells, run["builds"] or ""]).lower()]
        column, reverse = self.sorted_by
        index = COLUMNS.index(column) - 1
        rows.sort(key=lambda rc: _sort_key(rc[1][index]), reverse=reverse)
        self.shown = [run for run, _ in rows]
        table = self.query_one(DataTable)
        table.clear()
        right = [name in NUMERIC_COLUMNS for name in COLUMNS[1:]]
        for run, cells in rows:
            mark = "*" if run["run_id"] in self.marked else ""
            table.add_row(mark, *(Text(c, justify="right") if r else c
                                  for c, r in zip(cells, right, strict=True)), key=run["run_id"])

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if not column:
            return
        same = self.sorted_by[0] == column
        self.sorted_by = (column, not self.sorted_by[1] if same else column in NUMERIC_COLUMNS
                          or column == "when (UTC)")
        self._show()

    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    def _current(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.shown:
            return None
        return self.shown[table.cursor_row]

    def action_mark(self) -> None:
        run = self._current()
        if run is None:
            return
        if run["run_id"] in self.marked:
            self.marked.remove(run["run_id"])
        else:
            self.marked = (self.marked + [run["run_id"]])[-4:]
        table = self.query_one(DataTable)
        for i, shown in enumerate(self.shown):
            table.update_cell_at(Coordinate(i, 0), "*" if shown["run_id"] in self.marked else "")

    def action_compare(self) -> None:
        if len(self.marked) >= 2:
            open_compare(self, self.marked)  # in the order marked: the first is the baseline
        else:
            self.notify("mark two runs (up to four) with space first; the first is the baseline")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        run = self._current()
        path = Path(run["recording"]) if run and run["recording"] else None
        if path is not None and not path.is_file():
            self.notify(f"the recording {path} is gone: nothing to replay")
            return
        self.dismiss(path)
