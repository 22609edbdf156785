"""Per-user directories (XDG): build cache, run store, config.

Everything rpctui keeps between runs lives under these three roots; nothing is
written inside a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def cache_dir() -> Path:
    """Where llama.cpp builds and generated models are cached (``$XDG_CACHE_HOME/rpctui``)."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "rpctui"


def data_dir() -> Path:
    """Where run recordings live (``$XDG_DATA_HOME/rpctui``)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "rpctui"


def config_dir() -> Path:
    """Where user settings (theme) live (``$XDG_CONFIG_HOME/rpctui``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "rpctui"


def runs_dir() -> Path:
    """One JSONL file per run."""
    return data_dir() / "runs"


def shipped_dir(name: str) -> Path:
    """``examples`` or ``themes``: the copy a wheel installs inside the package, else (in a
    checkout, editable installs included) the project's top-level folder of that name."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name


def example_path(name: str) -> Path:
    """A profile shipped in examples/."""
    return shipped_dir("examples") / name


def private_dir(path: Path) -> Path:
    """``path`` made (with its parents) and kept readable by its owner only: run records hold
    hostnames, commands and output that are nobody else's business."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:  # made by an older rpctui, or by hand
        path.chmod(0o700)
    return path

