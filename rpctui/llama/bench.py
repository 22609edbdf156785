"""llama-bench output -> result rows (pure).

``-o jsonl`` prints one object per line; ``-o json`` (the only machine form of
ik_llama.cpp) prints an array whose objects arrive one test at a time. Both go
through :class:`BenchStream`, which yields each object as soon as it is complete.
Markdown tables (pasted logs, the seeds) parse with :func:`parse_markdown`.
"""

from __future__ import annotations

import json
import re
from typing import Any

_DECODER = json.JSONDecoder()


class BenchStream:
    """Incremental parser for llama-bench json/jsonl stdout."""

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, text: str) -> list[dict[str, Any]]:
        self._buf += text
        rows: list[dict[str, Any]] = []
        while True:
            start = self._buf.find("{")
            if start < 0:
                self._buf = ""
                return rows
            try:
                obj, end = _DECODER.raw_decode(self._buf, start)
            except json.JSONDecodeError:
                self._buf = self._buf[start:]
                return rows
            self._buf = self._buf[end:]
            if isinstance(obj, dict):
                rows.append(obj)


_OBJECT_START = re.compile(r'\{\s*"')  #: where a JSON object with a key could start
_OBJECT_MAX = 64 << 10


def json_rows(text: str) -> list[dict[str, Any]]:
    """Every llama-bench result object anywhere in a text (json, jsonl, or mixed into a log)."""
    rows: list[dict[str, Any]] = []
    start = _OBJECT_START.search(text)
    while start:
        pos = start.start()
        # Decoded from a bounded slice: a failed decode counts the lines before the failure
        # (json's error message), which over a whole log's text made a log of junk braces
        # quadratic. A llama-bench result is a few kB.
        try:
            obj, length = _DECODER.raw_decode(text[pos:pos + _OBJECT_MAX])
        except json.JSONDecodeError:
            start = _OBJECT_START.search(text, pos + 1)
            continue
        if isinstance(obj, dict) and "avg_ts" in obj:
            rows.append(obj)
            start = _OBJECT_START.search(text, pos + length)
        else:
            start = _OBJECT_START.search(text, pos + 1)
    return rows


def bench_label(row: dict[str, Any]) -> str:
    """The test as llama-bench's table names it: pp512, tg128, pp512+tg128, with @ dN."""
    n_prompt = int(row.get("n_prompt") or 0)
    n_gen = int(row.get("n_gen") or 0)
    if n_prompt and n_gen:
        name = f"pp{n_prompt}+tg{n_gen}"
    elif n_prompt:
        name = f"pp{n_prompt}"
    else:
        name = f"tg{n_gen}"
    depth = int(row.get("n_depth") or 0)
    return f"{name} @ d{depth}" if depth else name


def size_gib(row: dict[str, Any]) -> str:
    size = row.get("model_size")
    return f"{size / 1024**3:.2f} GiB" if isinstance(size, (int, float)) else str(size or "")


def params_b(row: dict[str, Any]) -> str:
    n = row.get("model_n_params")
    if not isinstance(n, (int, float)):
        return str(n or "")
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def backends(row: dict[str, Any]) -> str:
    value = row.get("backends")
    if value:
        return str(value)
    return "RPC" if str(row.get("rpc", "")) == "1" else ""


_MD_ROW = re.compile(r"^\|(.+)\|\s*$")


def parse_markdown(text: str) -> list[dict[str, Any]]:
    """Rows of llama-bench markdown tables, keyed by their header cells (``t/s`` included)."""
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        m = _MD_ROW.match(line.strip())
        if not m:
            header = None if not line.strip().startswith("|") else header
            continue
        cells = [c.strip() for c in m.group(1).split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue
        if "t/s" in cells and "test" in cells:
            header = cells
            continue
        if header is None:
            # A table pasted without its header (seed 000): the usual llama-bench columns.
            header = _guess_header(len(cells))
            if header is None:
                continue
        rows.append(dict(zip(header, cells, strict=False)))
    return rows


def _guess_header(n: int) -> list[str] | None:
    base = ["model", "size", "params", "backend", "ngl"]
    if n == 7:
        return base + ["test", "t/s"]
    if n == 8:
        return base + ["fa", "test", "t/s"]
    return None
