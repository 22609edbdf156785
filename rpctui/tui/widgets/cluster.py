"""The cluster tab: one card per node, wrapping into as many columns as fit."""

from __future__ import annotations

from textual.containers import VerticalScroll

from rpctui.run.state import ClusterState
from rpctui.tui.widgets.node_card import NodeCard


class ClusterView(VerticalScroll, can_focus=False):
    """A card per node; cards wrap into as many columns as the terminal allows. Only the
    cards in view are drawn: the others catch up when scrolled to. The view itself takes no
    focus: tab goes from card to card, and its scroll keys work from the card focused."""

    def __init__(self) -> None:
        super().__init__(id="cluster")
        self.cards: dict[str, NodeCard] = {}
        self._state: ClusterState | None = None

    def on_mount(self) -> None:
        self.watch(self, "scroll_y", self._catch_up, init=False)

    def on_resize(self) -> None:
        # Cards wrap: as many 70-column cards side by side as fit (1 to 4).
        self.styles.grid_size_columns = max(1, min(4, self.size.width // 70))
        self.call_after_refresh(self._catch_up)

    def _catch_up(self) -> None:
        if self._state is not None:
            self.show(self._state)

    def reset(self) -> None:
        for card in self.cards.values():
            card.remove()
        self.cards = {}
        self._state = None

    def show(self, state: ClusterState) -> None:
        self._state = state
        view = self.region
        for name in state.nodes:
            card = self.cards.get(name)
            if card is None:
                card = self.cards[name] = NodeCard(name)
                self.mount(card)
            region = card.region
            # A card not laid out yet is drawn (its size depends on it); one out of view waits.
            if not region or not view or view.overlaps(region):
                card.show(state)
