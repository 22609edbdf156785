"""Stand-alone agents shipped to nodes as source (stdlib only; they import nothing of rpctui)."""
