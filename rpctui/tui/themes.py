"""Our themes (themes/*.toml, loaded beside Textual's own) and the remembered choice."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from textual.theme import Theme

from rpctui.paths import config_dir, shipped_dir

DEFAULT_THEME = "rpctui-strix"


def load_themes() -> list[Theme]:
    return [Theme(**tomllib.loads(path.read_text()))
            for path in sorted(shipped_dir("themes").glob("*.toml"))]


def _settings() -> Path:
    return config_dir() / "settings.json"


def remembered_theme() -> str:
    try:
        return str(json.loads(_settings().read_text()).get("theme", DEFAULT_THEME))
    except (OSError, ValueError):
        return DEFAULT_THEME


def remember_theme(name: str) -> None:
    path = _settings()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data["theme"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
