"""One node's card: state, build, memory bars, network, each server's load."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.widgets import Static

from rpctui.run.state import ClusterState
from rpctui.tui.widgets.render import node_status, render_node


class NodeCard(Static, can_focus=True):
    """One node: state, build, memory bars with the planned need marked, network, loads.
    Enter or a click opens the node's detail."""

    DEFAULT_CSS = """
    NodeCard { border: round $primary; padding: 0 1; height: auto; min-height: 6; }
    NodeCard:focus { border: double $accent; }
    NodeCard.failed { border: round $error; }
    """

    @dataclass
    class Selected(Message):
        node: str

    def __init__(self, name: str) -> None:
        super().__init__()
        self.node_name = name
        self._drawn: tuple[object, ...] | None = None
        self._lines = -1

    def on_click(self) -> None:
        self.post_message(self.Selected(self.node_name))

    def key_enter(self) -> None:
        self.post_message(self.Selected(self.node_name))

    def show(self, state: ClusterState) -> None:
        name = self.node_name
        # State records are replaced, never changed, so identities tell what moved; a card
        # whose inputs are the same objects as last time is not drawn again.
        inputs = (state.nodes.get(name), state.telemetry.get(name), state.job.status,
                  state.teardown, state.main, state.plan, len(state.warnings),
                  tuple(s for s in state.servers.values() if s.node == name),
                  tuple(lp for lp in state.loads.values() if lp.node == name))
        if self._drawn is not None and len(inputs) == len(self._drawn) and all(
                a is b for a, b in zip(inputs, self._drawn, strict=True)):
            return
        self._drawn = inputs
        self.set_class(node_status(state, name) == "failed", "failed")
        text = render_node(state, name)
        lines = text.plain.count("\n")
        # A new layout only when the card grows or shrinks: most updates only repaint it.
        self.update(text, layout=lines != self._lines)
        self._lines = lines
