"""The key bar: Textual's Footer, rebuilt only when the keys it shows change."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyBar(Footer):
    """Textual's Footer mounts a widget per key again on every focus change, a layout and a
    style pass each time (most of a focus move's cost on a 32-node cluster). The keys shown
    depend on the focus only where the focused widget has bindings of its own; this one
    rebuilds when the keys it would show (key, description, enabled) differ."""

    _shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        shown = tuple((binding.key, binding.description, enabled)
                      for _node, binding, enabled, _tip in screen.active_bindings.values()
                      if binding.show)
        if shown == self._shown:
            return
        super().bindings_changed(screen)
        if self._bindings_ready and screen.app.app_focus and screen is self.screen:
            self._shown = shown
