"""The app's screens, one per file: the main one (the app composes its tabs) and those above it."""

from rpctui.tui.screens.compare import CompareScreen
from rpctui.tui.screens.confirm import ConfirmStop
from rpctui.tui.screens.editor import EditorScreen
from rpctui.tui.screens.examples import ExamplePicker
from rpctui.tui.screens.main import MainScreen
from rpctui.tui.screens.node import NodeScreen
from rpctui.tui.screens.runs import RunsScreen

__all__ = ["CompareScreen", "ConfirmStop", "EditorScreen", "ExamplePicker", "MainScreen",
           "NodeScreen", "RunsScreen"]
