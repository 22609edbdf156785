"""Asked on quit while servers run: stop them (nothing is left running) or stay."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class ConfirmStop(ModalScreen[bool]):
    """Quitting while servers run: stop them first? (default yes)."""

    BINDINGS = [Binding("y,enter", "answer(True)", "Stop them"), Binding("n", "answer(False)", "Leave")]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label("rpc-servers are running.\nStop every process rpctui started?")
            with Horizontal():
                yield Button("Stop and quit", id="yes", variant="error")
                yield Button("Cancel", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
