"""One node's card: state, build, memory bars, network, each server's load.

The card draws through Textual's line API, a line at a time, because a 32-node cluster
redraws every card twice a second and most of a card stays as it was: the name, the build,
the servers. Each line is rendered once (through the same Content path a Static uses, so it
looks the same) and kept while its text and styles are unchanged; an update repaints only
the lines that changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget

from rpctui.run.state import ClusterState
from rpctui.tui.widgets.render import node_status, render_node

LineKey = tuple[str, tuple[object, ...], object]


def _key(line: Text) -> LineKey:
    return line.plain, tuple(line.spans), line.style


class NodeCard(Widget, can_focus=True):
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
        self._lines: list[Text] = []
        # Rendered lines by key, for one width and one visual style (a theme or focus change
        # that alters the style starts a new cache).
        self._rendered: dict[LineKey, list[Strip]] = {}
        self._rendered_for: tuple[int, object] | None = None
        self._strips: list[Strip] | None = None
        #: the lines the last update repainted (None: all of them, with a new layout)
        self.repainted: list[int] | None = None

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
        # The text ends in a newline, so it has a last, empty line: a Static shows it too.
        lines = list(render_node(state, name).split("\n", allow_blank=True))
        self._lines = lines
        before = self._strips
        self._strips = None
        if before is None or not self.size.width:
            self.repainted = None
            self.refresh(layout=True)
            return
        after = self._layout(self.size.width)
        if len(after) != len(before):
            self.repainted = None
            self.refresh(layout=True)
            return
        # Only the lines that changed are repainted: a card's name, build and servers stay.
        self.repainted = [y for y, (a, b) in enumerate(zip(before, after, strict=True))
                          if a is not b]
        if self.repainted:
            self.refresh(*(Region(0, y, self.size.width, 1) for y in self.repainted))

    def _layout(self, width: int) -> list[Strip]:
        """Every line rendered at this width, wrapped as a Static would wrap it."""
        style = self.visual_style
        if self._rendered_for != (width, style):
            self._rendered_for = (width, style)
            self._rendered = {}
            self._strips = None
        if self._strips is not None:
            return self._strips
        rendered, strips = {}, []
        for line in self._lines:
            key = _key(line)
            done = self._rendered.get(key)
            if done is None:
                content = Content.from_rich_text(line, console=self.app.console)
                done = Visual.to_strips(self, content, width, None, style) or [Strip.blank(0)]
            rendered[key] = done
            strips.extend(done)
        # Only the lines still shown are kept: the cache never outgrows the card.
        self._rendered = rendered
        self._strips = strips
        return strips

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._layout(width))

    def render_line(self, y: int) -> Strip:
        strips = self._layout(self.size.width)
        return strips[y] if y < len(strips) else Strip.blank(self.size.width)
