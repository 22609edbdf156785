"""rpctui history: list and filter past runs, show one, export them, import recordings."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from rpctui.errors import ExitCode, UserError
from rpctui.history import db
from rpctui.history.index import import_recordings
from rpctui.history.query import (
    NUMERIC_COLUMNS,
    RUN_COLUMNS,
    RunFilter,
    find_runs,
    outcome,
    resolve_run,
    run_row,
    when,
)


def _num(value: Any, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    """Aligned columns, numbers to the right."""
    if not rows:
        return ""
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    right = NUMERIC_COLUMNS | {"t/s"}

    def line(r: dict[str, str]) -> str:
        return "  ".join(r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c])
                         for c in columns).rstrip()

    return "\n".join([line({c: c for c in columns}), *(line(r) for r in rows)]) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def _link(node: dict[str, Any]) -> str:
    from rpctui.history.compare import link_text

    return link_text(node) if node["link"] else "-"


def history_command(args: Any) -> ExitCode:
    """Dispatch `rpctui history [list|show|export|import|path]`."""
    action = args.action or "list"
    if action == "path":
        print(db.db_path())
        return ExitCode.OK
    conn = db.connect()
    try:
        if action == "import":
            paths = [Path(p) for p in args.paths] if args.paths else None
            for p in paths or []:
                if not p.is_file():
                    raise UserError(f"no recording at {p}", "give the .jsonl files of runs")
            skipped: list[str] = []
            done = import_recordings(paths, conn, only_new=paths is None, skipped=skipped)
            print(f"{len(done)} run(s) imported into {db.db_path()}", file=sys.stderr)
            for why in skipped:
                print(f"not imported: {why}", file=sys.stderr)
            return ExitCode.OK
        import_recordings(None, conn)  # recordings the database does not hold yet
        if action == "show":
            sys.stdout.write(show_run(conn, resolve_run(conn, args.run)))
            return ExitCode.OK
        flt = RunFilter(profile=args.profile or "", model=args.model or "",
                        nodes=args.nodes or "", build=args.build or "", since=args.since or "",
                        until=args.until or "", status=args.status or "",
                        limit=args.limit if action == "list" else None)
        runs = find_runs(conn, flt)
        if action == "export":
            text = export(conn, runs, args.format if args.format in ("csv", "json") else "csv")
        elif args.format == "json":
            text = json.dumps(runs, indent=1) + "\n"
        elif args.format == "csv":
            text = _csv(runs)
        else:
            text = table([run_row(r) for r in runs], RUN_COLUMNS) or "no runs match\n"
        if getattr(args, "out", None):
            Path(args.out).write_text(text)
            print(f"written to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return ExitCode.OK
    finally:
        conn.close()


def export(conn: Any, runs: list[dict[str, Any]], fmt: str) -> str:
    """One row per result (per run without results: one row), run facts beside llama-bench's."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in db.bench_rows(conn, [r["run_id"] for r in runs]):
        by_run.setdefault(row["run_id"], []).append(row)
    out: list[dict[str, Any]] = []
    for run in runs:
        facts = {"run_id": run["run_id"], "started": run["started"], "profile": run["profile"],
                 "model": run["model"], "n_nodes": run["n_nodes"], "n_servers": run["n_servers"],
                 "builds": run["builds"], "status": run["status"], "exit_code": run["exit_code"],
                 "peak_mib": run["peak_mib"]}
        results = by_run.get(run["run_id"], [])
        if not results:
            out.append({**facts, "step": None, "test": None, "step_servers": None,
                        "step_nodes": None, "avg_ts": None, "stddev_ts": None})
        for r in results:
            out.append({**facts, "step": r["step"], "test": r["test"], "step_servers": r["n_servers"],
                        "step_nodes": r["nodes"], "avg_ts": r["avg_ts"], "stddev_ts": r["stddev_ts"],
                        "backends": r["backends"], "n_gpu_layers": r["n_gpu_layers"],
                        "build_commit": r["build_commit"], "build_number": r["build_number"]})
    if fmt == "json":
        return json.dumps(out, indent=1) + "\n"
    fields: dict[str, None] = {}
    for row in out:
        fields.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(out)
    return buf.getvalue()


def show_run(conn: Any, run_id: str) -> str:
    """One run, as text: what ran where, its results, memory, problems, the plan check."""
    run = dict(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
    lines = [f"run {run_id}  {when(run)} UTC  {outcome(run)}",
             f"profile {run['profile']} ({run['profile_path']}), command {run['command']}, "
             f"model {run['model'] or '-'}, {run['duration_s']:.1f} s",
             f"recording {run['recording']}" if run["recording"] else "", ""]
    nodes = db.rows(conn, "nodes", run_id)
    if nodes:
        lines.append(table([{"node": n["node"], "host": n["hostname"] or "",
                             "build": f"{n['flavour']} {n['build']}".strip(),
                             "RPC": n["protocol"] or "",
                             "devices": ", ".join(json.loads(n["devices"] or "[]")),
                             "link": _link(n)}
                            for n in nodes], ("node", "host", "build", "RPC", "link", "devices")))
    servers = db.rows(conn, "servers", run_id)
    if servers:
        lines.append(table([{"server": s["endpoint"], "node": s["node"], "bind": s["bind"] or "",
                             "transport": s["transport"] or "tcp",
                             "cache": ("on, " + s["cache_state"] if s["cache_state"] else "on")
                             if s["cache"] else "off",
                             "load s": _num(s["load_s"], "{:.2f}"),
                             "load MiB": _num((s["load_bytes"] or 0) / 2**20
                                              if s["load_bytes"] is not None else None, "{:.1f}"),
                             "status": s["status"] or ""} for s in servers],
                           ("server", "node", "bind", "transport", "cache", "load s", "load MiB",
                            "status")))
    results = db.bench_rows(conn, [run_id])
    if results:
        lines.append(table([{"step": str(r["step"]), "servers": str(r["n_servers"]),
                             "nodes": r["nodes"] or "", "test": r["test"],
                             "t/s": f"{r['avg_ts']:.2f} ± {r['stddev_ts'] or 0:.2f}",
                             "build": f"{r['build_commit']} ({r['build_number']})"}
                            for r in results], ("step", "servers", "nodes", "test", "t/s", "build")))
    memory = db.rows(conn, "memory", run_id)
    if memory:
        lines.append(table([{"node": m["node"], "memory": m["device"],
                             "peak GiB": _num(m["peak_mib"] / 1024, "{:.2f}"),
                             "of GiB": _num((m["total_mib"] or 0) / 1024 if m["total_mib"] else None,
                                            "{:.1f}")}
                            for m in sorted(memory, key=lambda m: (m["node"], m["device"]))],
                           ("node", "memory", "peak GiB", "of GiB")))
    for p in db.rows(conn, "problems", run_id):
        lines.append(f"! {p['kind']} {p['node'] or ''}: {p['message']}")
    return "\n".join(line for line in lines) + "\n"


def report_command(refs: list[str], fmt: str, out: str | None) -> ExitCode:
    """`rpctui report`: Markdown or one HTML file, to standard output or to --out."""
    from rpctui.history.report import build_report, to_html, to_markdown

    conn = db.connect()
    try:
        import_recordings(None, conn)
        report = build_report(conn, refs)
    finally:
        conn.close()
    if fmt == "html":
        text = to_html(report)
    elif out:
        target = Path(out)
        names = {}
        for stem, svg in report.charts.items():
            name = f"{target.stem}-{stem}.svg"
            (target.parent / name).write_text(svg)
            names[stem] = name
        text = to_markdown(report, names)
    else:
        text = to_markdown(report)
    if out:
        Path(out).write_text(text)
        print(f"report written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return ExitCode.OK
