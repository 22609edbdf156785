"""The app's screens beside the main one, one per file."""

from rpctui.tui.screens.compare import CompareScreen
from rpctui.tui.screens.confirm import ConfirmStop
from rpctui.tui.screens.editor import EditorScreen
from rpctui.tui.screens.examples import ExamplePicker
from rpctui.tui.screens.node import NodeScreen
from rpctui.tui.screens.runs import RunsScreen

__all__ = ["CompareScreen", "ConfirmStop", "EditorScreen", "ExamplePicker", "NodeScreen",
           "RunsScreen"]
