"""Find the line of a key in TOML text, for error messages that name file, line and key.

TOML parsers return values without positions. This scanner follows table
headers (``[a.b]``, ``[[a.b]]`` with their array indices) and ``key =`` lines,
and maps a value path such as ``("nodes", 1, "servers", 0, "port")`` to the
1-based line where it is written. Keys inside inline tables or multi-line
arrays resolve to the line of the enclosing key, which is where the user looks.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_PART = re.compile(r"""[A-Za-z0-9_-]+|"([^"]*)"|'([^']*)'""")


def _split_key(text: str) -> list[str]:
    parts = []
    for m in _PART.finditer(text):
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        parts.append(quoted if quoted is not None else m.group(0))
    return parts


def key_lines(text: str) -> dict[Path, int]:
    """Every table and key path in ``text`` mapped to its 1-based line number."""
    lines: dict[Path, int] = {}
    counts: dict[Path, int] = {}
    table: Path = ()
    depth = 0  # open brackets of a multi-line value: keys inside are not top-level keys
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                names = _split_key(header.group(2))
                parent = _resolve(names[:-1], counts) + (names[-1],)
                if header.group(1) == "[[":
                    index = counts.get(parent, -1) + 1
                    counts[parent] = index
                    table = parent + (index,)
                else:
                    table = parent
                for i in range(1, len(table) + 1):
                    lines.setdefault(table[:i], number)
                continue
            key = _KEY.match(line)
            if key:
                path = table + tuple(_split_key(key.group(1)))
                lines.setdefault(path, number)
                rest = line[key.end():]
                depth = _bracket_depth(rest)
                continue
        else:
            depth += _bracket_depth(stripped)
            depth = max(depth, 0)
    return lines


def _resolve(names: list[str], counts: dict[Path, int]) -> Path:
    """Insert the current index of every enclosing array of tables into a header path."""
    out: Path = ()
    for name in names:
        out = out + (name,)
        if out in counts:
            out = out + (counts[out],)
    return out


def _bracket_depth(text: str) -> int:
    """Net open ``[``/``{`` in a value fragment, ignoring strings and comments."""
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its longest written prefix."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
