"""The profile editor: validates as you type, saves keeping comments."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header, Input, Label, Static, TextArea

from rpctui.profile.load import ProfileError, parse_profile
from rpctui.tui.widgets.footer import KeyBar


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
        yield KeyBar()

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
