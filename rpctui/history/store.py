"""Recordings read back, and a run's results as md, json or csv.

A run is a recording: ``history/recorder.py`` appends each event as it happens (one
JSON object a line, flushed), so a crash loses nothing that was seen. Reports
read the recording, or the state folded from it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from rpctui.errors import UserError
from rpctui.llama.bench import backends, bench_label, params_b, size_gib
from rpctui.run import events as ev
from rpctui.run.schema import upgrade
from rpctui.run.state import ClusterState


def new_run_id(profile_name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", profile_name or "run").strip("-")[:40] or "run"
    return f"{stamp}-{slug}-{time.monotonic_ns() % 100000:05d}"


def read_run(path: str | Path) -> list[ev.Event]:
    """The events of a recorded run, upgraded from an older recording format; a torn last line
    (from a crash) is skipped; a recording from a newer rpctui is a UserError."""
    raw = []
    damaged = 0
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read recording {path}: {exc.strerror}", "check the path") from None
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            data = None
        if isinstance(data, dict):
            raw.append(data)
        elif line.strip():
            damaged += 1
    events = []
    for data in upgrade(raw, str(path)):
        try:
            events.append(ev.from_dict(data))
        except (KeyError, TypeError, ValueError):
            damaged += 1
    if damaged:
        events.append(ev.Notice(t=events[-1].t if events else 0.0, message=(
            f"{damaged} line(s) of {path} could not be read and were left out")))
    return events


COLUMNS = ("model", "size", "params", "backend", "ngl", "servers", "nodes", "test", "t/s")


def result_rows(state: ClusterState) -> list[dict[str, Any]]:
    """One row per bench result, in llama-bench's columns plus the servers that ran it."""
    rows = []
    for result in state.results:
        r = result.row
        job = next((j for j in state.jobs + (state.job,) if j.step == result.step), None)
        servers = job.servers if job else ()
        nodes = sorted({state.servers[s].node for s in servers if s in state.servers})
        avg = r.get("avg_ts")
        std = r.get("stddev_ts")
        rows.append({
            "model": r.get("model_type", ""),
            "size": size_gib(r),
            "params": params_b(r),
            "backend": backends(r),
            "ngl": r.get("n_gpu_layers", ""),
            "servers": result.n_servers,
            "nodes": ",".join(nodes),
            "test": bench_label(r),
            "t/s": f"{avg:.2f} ± {std:.2f}" if isinstance(avg, (int, float)) else "",
            "avg_ts": avg,
            "stddev_ts": std,
            "build": f"{str(r.get('build_commit', ''))[:8]} ({r.get('build_number', '')})",
            "step": result.step,
            "setup": job.setup if job else "",
            "raw": r,
        })
    _versus_local(rows)
    return rows


def _versus_local(rows: list[dict[str, Any]]) -> None:
    """Where a step ran without rpc-servers (a sweep's 0: the main node alone, the local
    baseline), every row of the same test gets its t/s as a ratio to that baseline, as seed
    000's "RPC Scaling" tables give it."""
    base = {r["test"]: r["avg_ts"] for r in rows
            if r["servers"] == 0 and isinstance(r["avg_ts"], (int, float)) and r["avg_ts"] > 0}
    if not base:
        return
    for r in rows:
        b = base.get(r["test"])
        ok = b and isinstance(r["avg_ts"], (int, float))
        r["vs_local"] = round(r["avg_ts"] / b, 3) if ok else None
        r["x local"] = f"{r['vs_local']:.2f}x" if ok else "-"


def _columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns: a sweep's setups and the ratio to the local baseline when there."""
    columns: tuple[str, ...] = COLUMNS
    if any(r.get("setup") for r in rows):
        columns = columns[:-1] + ("setup",) + columns[-1:]
    return columns + ("x local",) if rows and "x local" in rows[0] else columns


def to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no results)\n"
    right = {"size", "params", "ngl", "servers", "test", "t/s", "x local"}
    columns = _columns(rows)
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    head = "| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |"
    rule = "| " + " | ".join(("-" * (widths[c] - 1) + ":") if c in right else "-" * widths[c]
                             for c in columns) + " |"
    body = ["| " + " | ".join(str(r[c]).rjust(widths[c]) if c in right else
                              str(r[c]).ljust(widths[c]) for c in columns) + " |" for r in rows]
    builds = sorted({r["build"] for r in rows})
    return "\n".join([head, rule, *body, "", f"build: {', '.join(builds)}", ""])


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = [c for c in _columns(rows) if c not in ("t/s", "x local")] + ["avg_ts", "stddev_ts",
                                                                          "build"]
    if rows and "vs_local" in rows[0]:
        fields.append("vs_local")
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return out.getvalue()


FORMATS = {"md": to_markdown, "json": to_json, "csv": to_csv}
