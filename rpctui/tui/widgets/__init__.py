"""The app's widgets, one per file; render.py draws a node card's text from ClusterState."""

from rpctui.tui.widgets.cluster import ClusterView
from rpctui.tui.widgets.footer import KeyBar
from rpctui.tui.widgets.job import JobView
from rpctui.tui.widgets.node_card import NodeCard
from rpctui.tui.widgets.render import node_status, planned_share, render_node, sparkline

__all__ = ["ClusterView", "JobView", "KeyBar", "NodeCard", "node_status", "planned_share", "render_node",
           "sparkline"]
