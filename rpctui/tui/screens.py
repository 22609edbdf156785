"""Screens beside the main one: past runs and their comparison, the profile editor, a node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, OptionList, RichLog, Static, TextArea

from rpctui.errors import UserError
from rpctui.history.store import compare_rows, list_runs, run_summary
from rpctui.profile.load import ProfileError, parse_profile
from rpctui.run.state import ClusterState
from rpctui.tui.widgets import render_node, sparkline


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
        yield Footer()

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
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("measure", "of", "A", "B", "B / A")
        for row in compare_rows(self.a, self.b):
            table.add_row(*row)


class EditorScreen(Screen[None]):
    """The profile as text, validated as you type; ctrl+s saves, ctrl+w saves as. Editing the
    text itself is what keeps every comment and the order of keys."""

    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("ctrl+w", "save_as", "Save as"),
                Binding("escape", "dismiss", "Back")]

    def __init__(self, path: Path, text: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.initial = text if text is not None else path.read_text()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(str(self.path), id="editor-path")
        yield TextArea(self.initial, language="toml", id="editor", show_line_numbers=True)
        yield Static(id="problems")
        yield Input(placeholder="save as: path", id="save-as", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.validate()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self.validate()

    def validate(self) -> bool:
        text = self.query_one(TextArea).text
        problems = self.query_one("#problems", Static)
        try:
            parse_profile(text, str(self.path))
        except ProfileError as exc:
            problems.update(f"[b red]{len(exc.problems)} problem(s)[/]\n{exc.message}")
            return False
        problems.update("[green]valid profile[/]")
        return True

    def action_save(self) -> None:
        if not self.validate():
            self.notify("not saved: fix the problems first", severity="error")
            return
        self.path.write_text(self.query_one(TextArea).text)
        self.notify(f"saved {self.path}")

    def action_save_as(self) -> None:
        box = self.query_one("#save-as", Input)
        box.remove_class("hidden")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "save-as" and event.value:
            self.path = Path(event.value).expanduser()
            self.query_one("#editor-path", Label).update(str(self.path))
            event.input.add_class("hidden")
            self.action_save()


class ExamplePicker(ModalScreen[Path | None]):
    """Start a new profile from one of the examples."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, examples: list[Path]) -> None:
        super().__init__()
        self.examples = examples

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label("Start a new profile from an example:")
            yield OptionList(*(p.name for p in self.examples), id="examples")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.examples[event.option_index])


class NodeScreen(Screen[None]):
    """One node: its card, memory and network over time, each server's full log."""

    BINDINGS = [Binding("escape", "dismiss", "Back")]

    def __init__(self, state: ClusterState, node: str, logs: list[str]) -> None:
        super().__init__()
        self.state, self.node, self.logs = state, node, logs

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static(render_node(self.state, self.node), id="node-card")
            yield Static(id="node-history")
            yield DataTable(id="node-procs")
            yield RichLog(id="node-log", markup=False)
        yield Footer()

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
        table = self.query_one(DataTable)
        table.add_columns("server", "resident MiB", "CPU s", "GPU MiB")
        if tel and tel.sample:
            gpu = dict(tel.sample.gpu_procs)
            for ep, rss, cpu in tel.sample.procs:
                table.add_row(ep, f"{rss:.1f}", f"{cpu:.1f}", f"{gpu.get(ep, 0):.0f}")
        log = self.query_one(RichLog)
        for line in self.logs:
            log.write(line)
