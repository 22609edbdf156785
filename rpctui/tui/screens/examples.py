"""Start a new profile from one of the shipped examples."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList


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
