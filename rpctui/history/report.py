"""Reports a person can post: the scaling table in seed 000's shape (t/s by node count), memory
per node, load time per server, and charts (t/s against node count, memory and network over
time), as Markdown (charts as SVG files beside it) or one self-contained HTML file."""

from __future__ import annotations

import json
import sqlite3
import statistics
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from rpctui.history import db
from rpctui.history.query import natural, resolve_run
from rpctui.history.store import read_run
from rpctui.history.svg import line_chart
from rpctui.run import events as ev
from rpctui.run.state import net_rates

MAX_SERIES = 8  #: nodes drawn in the time charts (the highest peaks; the table has them all)


@dataclass
class Table:
    title: str
    head: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  #: columns aligned right


@dataclass
class Report:
    title: str
    facts: list[str]
    tables: list[Table]
    charts: dict[str, str]  #: file stem -> SVG


def _nodes_in_step(conn: sqlite3.Connection, run_id: str, step: int) -> int:
    """Machines a step ran on: the main node and every node with a server it used."""
    run = conn.execute("SELECT main FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    row = conn.execute("SELECT servers FROM steps WHERE run_id = ? AND step = ?",
                       (run_id, step)).fetchone()
    used = set(json.loads(row["servers"])) if row and row["servers"] else set()
    nodes = {s["node"] for s in db.rows(conn, "servers", run_id) if s["endpoint"] in used}
    return len(nodes | {run["main"]}) if run and run["main"] else len(nodes)


def build_report(conn: sqlite3.Connection, refs: list[str]) -> Report:
    run_ids = list(dict.fromkeys(resolve_run(conn, ref) for ref in refs))
    runs = [dict(conn.execute("SELECT * FROM runs WHERE run_id = ?", (r,)).fetchone())
            for r in run_ids]
    results = db.bench_rows(conn, run_ids)

    # Scaling: t/s by node count, every repetition of every run and step pooled per cell; by
    # server count where every step ran on the same machines (a sweep on one node).
    counts_of: dict[tuple[str, int], int] = {}  # a step's node count, read once for its results
    for r in results:
        key = (r["run_id"], r["step"])
        if key not in counts_of:
            counts_of[key] = 1 if r["n_servers"] == 0 else _nodes_in_step(conn, *key)
    by_servers = (len(set(counts_of.values())) == 1
                  and len({r["n_servers"] for r in results}) > 1)
    cells: dict[tuple[str, int], list[float]] = {}
    for r in results:
        count = r["n_servers"] if by_servers else counts_of[(r["run_id"], r["step"])]
        samples = json.loads(r["samples_ts"]) if r["samples_ts"] else [r["avg_ts"]]
        cells.setdefault((r["test"], count), []).extend(float(x) for x in samples)
    counts = sorted({c for _, c in cells})
    tests = list(dict.fromkeys(t for t, _ in cells))
    scaling_rows = []
    for test in tests:
        row = [test]
        base = None
        for c in counts:
            samples = cells.get((test, c))
            if not samples:
                row.append("-")
                continue
            mean = statistics.fmean(samples)
            sd = statistics.stdev(samples) if len(samples) > 1 else 0.0
            base = base or mean
            row.append(f"{mean:.2f} ± {sd:.2f}" + (f" ({mean / base:.2f}x)" if mean != base else ""))
        scaling_rows.append(row)
    local = any(r["n_servers"] == 0 for r in results)
    against = "the local baseline, the main node alone" if local else (
        "the fewest servers" if by_servers else "the fewest nodes")
    what = "server count (all on the same machines)" if by_servers else \
        "node count (the main node counts)"
    unit = "server" if by_servers else "node"
    tables = [Table(f"t/s by {what}; ratios against {against}",
                    ["test", *(f"{c} {unit}" + ("s" if c != 1 else "") for c in counts)],
                    scaling_rows, set(range(1, len(counts) + 1)))]

    memory, loads = [], []
    for run in runs:
        label = run["run_id"] if len(runs) > 1 else ""
        for m in sorted(db.rows(conn, "memory", run["run_id"]),
                        key=lambda m: (natural(m["node"]), m["device"])):
            memory.append(([label] if label else []) + [
                m["node"], m["device"], f"{m['peak_mib'] / 1024:.2f}",
                f"{m['total_mib'] / 1024:.1f}" if m["total_mib"] else "-",
                f"{100 * m['peak_mib'] / m['total_mib']:.0f} %" if m["total_mib"] else "-"])
        for s in sorted(db.rows(conn, "servers", run["run_id"]), key=lambda s: natural(s["endpoint"])):
            loads.append(([label] if label else []) + [
                s["endpoint"], s["node"],
                f"{s['load_s']:.2f}" if s["load_s"] is not None else "-",
                f"{s['load_bytes'] / 2**20:.1f}" if s["load_bytes"] is not None else "-",
                f"{s['load_bytes'] / 2**20 / s['load_s']:.1f}" if s["load_s"] and s["load_bytes"] else "-",
                ("on, " + s["cache_state"] if s["cache_state"] else "on") if s["cache"] else "off"])
    lead = ["run"] if len(runs) > 1 else []
    tables.append(Table("peak memory per node", lead + ["node", "memory", "peak GiB", "of GiB",
                                                        "share"], memory,
                        {len(lead) + 2, len(lead) + 3, len(lead) + 4}))
    tables.append(Table("load per server (a sweep loads again at each step: summed)",
                        lead + ["server", "node", "load s", "MiB", "MiB/s", "tensor cache"], loads,
                        {len(lead) + 2, len(lead) + 3, len(lead) + 4}))

    tables += _profiler_tables(conn, runs)

    charts = {"scaling": line_chart(
        f"t/s by {unit} count", {t: [(c, statistics.fmean(cells[(t, c)])) for c in counts
                                     if (t, c) in cells] for t in tests},
        f"{unit}s", "tokens per second", points=True, integer_x=True)}
    charts.update(_time_charts(runs))

    builds = sorted({r["builds"] for r in runs if r["builds"]})
    facts = [f"{r['run_id']}: {r['started'][:16].replace('T', ' ')} UTC, profile {r['profile']}, "
             f"{r['n_nodes']} nodes, {r['n_servers']} servers, {r['status']}" for r in runs]
    facts += [f"model: {', '.join(sorted({r['model'] for r in runs if r['model']})) or '-'}",
              f"build: {', '.join(builds) or '-'}"]
    title = f"rpctui report: {runs[0]['profile']}" + (f" and {len(runs) - 1} more run(s)"
                                                      if len(runs) > 1 else "")
    return Report(title, facts, tables, charts)


def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _profiler_tables(conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> list[Table]:
    """The links as tested before each run, and where each token's time went."""
    lead = ["run"] if len(runs) > 1 else []
    links, parts = [], []
    for run in runs:
        label = [run["run_id"]] if lead else []
        for link in sorted(db.rows(conn, "links", run["run_id"]), key=lambda r: natural(r["node"])):
            links.append(label + [link["node"], link["endpoint"], _f(link["rtt_ms"]),
                                  _f(link["to_mbps"], ".0f"), _f(link["from_mbps"], ".0f"),
                                  link["interface"] or "-", _f(link["link_mbps"], "d"),
                                  _f(link["mtu"], "d"), link["flag"] or ""])
        seen: set[tuple[int, str]] = set()
        for b in db.rows(conn, "breakdown", run["run_id"]):
            first = (b["step"], b["test"]) not in seen
            seen.add((b["step"], b["test"]))
            parts.append(label + [
                f"{b['test']} (step {b['step']})" if first else "",
                _f(b["ms_per_token"]) if first else "", f"{b['node']} {b['endpoint']}",
                _f(b["compute_ms"]), _f(b["latency_ms"]), _f(b["round_trips"], ".2f"),
                _f(b["transfer_ms"]), f"{b['to_bytes']:.0f} / {b['from_bytes']:.0f}",
                _f(b["main_ms"]) if first else "", b["bottleneck"] if first else ""])
    out = []
    if links:
        out.append(Table("links from the main node, tested before the servers started",
                         lead + ["node", "endpoint", "rtt ms", "to Mb/s", "from Mb/s",
                                 "interface", "speed Mb/s", "MTU", "flag"], links,
                         {len(lead) + i for i in (2, 3, 4, 6, 7)}))
    if parts:
        out.append(Table("where each token's time goes (ms per token; latency = round trips x "
                         "the link's round-trip time; main = what the servers leave)",
                         lead + ["test", "measured", "server", "compute", "latency",
                                 "round trips", "transfer", "bytes to / from", "main",
                                 "bottleneck"], parts,
                         {len(lead) + i for i in (1, 3, 4, 5, 6, 7, 8)}))
    return out


def _time_charts(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Memory in use and network received over time, per node, from the first run's samples."""
    path = next((Path(r["recording"]) for r in runs if r["recording"]
                 and Path(r["recording"]).is_file()), None)
    if path is None:
        return {}
    samples: dict[str, list[ev.NodeSample]] = {}
    for e in read_run(path):
        if isinstance(e, ev.NodeSample):
            samples.setdefault(e.node, []).append(e)
    used: dict[str, list[tuple[float, float]]] = {}
    rx: dict[str, list[tuple[float, float]]] = {}
    for node, series in samples.items():
        for old, new in zip(series, series[1:], strict=False):
            gpu = sum(g.vram_used_mib or 0.0 for g in new.gpus)
            ram = (new.mem_total_mib - new.mem_available_mib
                   if new.mem_total_mib and new.mem_available_mib is not None else 0.0)
            used.setdefault(node, []).append((new.t, (ram + gpu) / 1024))
            rx.setdefault(node, []).append((new.t, net_rates(old, new)[0] / 2**20))
    top = sorted(used, key=lambda n: -max(y for _, y in used[n]))[:MAX_SERIES]
    label = f" (the {MAX_SERIES} highest of {len(used)} nodes)" if len(used) > MAX_SERIES else ""
    return {
        "memory": line_chart(f"memory in use per node, RAM + VRAM{label}",
                             {n: used[n] for n in sorted(top, key=natural)}, "seconds", "GiB"),
        "network": line_chart(f"network received per node{label}",
                              {n: rx[n] for n in sorted(top, key=natural)}, "seconds", "MiB/s"),
    }


def to_markdown(report: Report, chart_names: dict[str, str] | None = None) -> str:
    """Tables as GitHub Markdown; charts linked as image files when they were written."""
    out = [f"# {report.title}", "", *(f"- {f}" for f in report.facts), ""]
    for t in report.tables:
        out += [f"## {t.title}", "", "| " + " | ".join(t.head) + " |",
                "| " + " | ".join("---:" if i in t.right else "---" for i in range(len(t.head)))
                + " |"]
        out += ["| " + " | ".join(row) + " |" for row in t.rows] or ["| (none) |"]
        out.append("")
    for stem, name in (chart_names or {}).items():
        out += [f"![{stem}]({name})", ""]
    out.append("Made with rpctui (`rpctui report`).")
    return "\n".join(out) + "\n"


def to_html(report: Report) -> str:
    """One self-contained file: styles inline, charts as inline SVG, no scripts."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(report.title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
             "th,td{border:1px solid #ccc;padding:3px 8px}td.r{text-align:right}"
             "th{background:#f3f3f3}figure{margin:1em 0}</style></head><body>",
             f"<h1>{escape(report.title)}</h1>", "<ul>"]
    parts += [f"<li>{escape(f)}</li>" for f in report.facts] + ["</ul>"]
    for t in report.tables:
        parts.append(f"<h2>{escape(t.title)}</h2><table><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h in t.head) + "</tr>")
        for row in t.rows:
            parts.append("<tr>" + "".join(
                f'<td class="r">{escape(c)}</td>' if i in t.right else f"<td>{escape(c)}</td>"
                for i, c in enumerate(row)) + "</tr>")
        parts.append("</table>")
    for stem, svg in report.charts.items():
        parts.append(f'<figure id="chart-{stem}">{svg}</figure>')
    parts.append("<p>Made with rpctui (<code>rpctui report</code>).</p></body></html>")
    return "\n".join(parts) + "\n"
