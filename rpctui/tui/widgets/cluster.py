"""The cluster tab: one card per node, wrapping into as many columns as fit."""

from __future__ import annotations

from textual.containers import VerticalScroll

from rpctui.run.state import ClusterState
from rpctui.tui.widgets.node_card import NodeCard


class ClusterView(VerticalScroll):
    """A card per node; cards wrap into as many columns as the terminal allows."""

    def __init__(self) -> None:
        super().__init__(id="cluster")
        self.cards: dict[str, NodeCard] = {}

    def on_resize(self) -> None:
        # Cards wrap: as many 70-column cards side by side as fit (1 to 4).
        self.styles.grid_size_columns = max(1, min(4, self.size.width // 70))

    def reset(self) -> None:
        for card in self.cards.values():
            card.remove()
        self.cards = {}

    def show(self, state: ClusterState) -> None:
        for name in state.nodes:
            if name not in self.cards:
                card = NodeCard(name)
                self.cards[name] = card
                self.mount(card)
            self.cards[name].show(state)
