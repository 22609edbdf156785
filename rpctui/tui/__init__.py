"""The Textual app: a thin renderer of ClusterState (see rpctui.state)."""
