"""The app's first screen, holding the cluster and job tabs the app composes."""

from __future__ import annotations

from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget


class MainScreen(Screen[None]):
    """Textual repaints a whole screen whenever focus moves (its ``focused`` reactive
    repaints). The widgets that gain and lose focus restyle and repaint themselves, so here a
    focus move repaints only them: a tab through a 32-node cluster redraws two cards, not the
    header, the footer and every card in view."""

    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
