"""The Textual app, a thin face over the engine's public API and the run model: app.py, its
screens and widgets, the stylesheet and themes. The only package that imports Textual; nothing
imports it but the command line's dispatch."""
