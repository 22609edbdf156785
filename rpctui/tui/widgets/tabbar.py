"""The main screen's tab bar: Cluster and Job, in one widget.

Textual's Tabs is a widget per tab plus an animated underline; switching restyles the tabs
(a class moves), lays them out and animates the bar for a third of a second. Here a switch
is one repaint of two lines: the labels, the active one bold, and a rule under them that is
the accent colour under the active tab.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class TabBar(Widget):
    DEFAULT_CSS = """
    TabBar { height: 2; }
    TabBar > .tabbar--active { color: $foreground; text-style: bold; }
    TabBar > .tabbar--inactive { color: $foreground-muted; }
    TabBar > .tabbar--underline { color: $accent; }
    TabBar > .tabbar--rule { color: $panel-lighten-2; }
    """
    COMPONENT_CLASSES = {"tabbar--active", "tabbar--inactive", "tabbar--underline",
                         "tabbar--rule"}

    class Activated(Message):
        """A tab was clicked."""

        def __init__(self, tab: str) -> None:
            super().__init__()
            self.tab = tab

    active: reactive[str] = reactive("")

    def __init__(self, tabs: list[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tabs = tabs  #: (id, label), in order
        self.set_reactive(TabBar.active, tabs[0][0])

    def _spans(self) -> list[tuple[str, int, int]]:
        out, x = [], 0
        for tab, label in self.tabs:
            out.append((tab, x, x + len(label) + 2))
            x += len(label) + 2
        return out

    def render(self) -> Text:
        style = self.get_component_rich_style
        labels, rule = Text(no_wrap=True), Text(no_wrap=True)
        for (tab, label), (_, start, end) in zip(self.tabs, self._spans(), strict=True):
            on = tab == self.active
            labels.append(f" {label} ", style("tabbar--active" if on else "tabbar--inactive"))
            rule.append("━" * (end - start), style("tabbar--underline" if on else "tabbar--rule"))
        rule.append("━" * max(0, self.size.width - rule.cell_len), style("tabbar--rule"))
        labels.append("\n")
        return labels + rule

    def on_click(self, event: events.Click) -> None:
        for tab, start, end in self._spans():
            if start <= event.x < end:
                self.post_message(self.Activated(tab))
                return
