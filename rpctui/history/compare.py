"""Runs (or sweep steps) side by side: each metric with its spread and change, whether the
change is beyond the runs' own noise, and what differs between them that could explain it."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from dataclasses import dataclass, field
from typing import Any

from rpctui.errors import UserError
from rpctui.history import db
from rpctui.history.query import natural, resolve_run

#: flags whose value names the cluster rather than a setting (the servers are compared apart)
_JOB_IGNORED = {"--rpc", "-o", "--output", "-m", "--model"}


@dataclass
class Subject:
    """One side of a comparison: a run, or one step of a sweep."""

    run_id: str
    step: int | None
    label: str
    metrics: dict[str, list[float]] = field(default_factory=dict)  #: name -> samples
    facts: dict[str, dict[str, str]] = field(default_factory=dict)  #: kind -> item -> value


@dataclass(frozen=True)
class MetricRow:
    metric: str
    values: tuple[str, ...]  #: per subject: mean ± spread (n), or -
    changes: tuple[str, ...]  #: per subject after the first: the change against the first
    verdicts: tuple[str, ...]  #: per subject after the first: beyond noise, within noise, ...


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``RUN`` or ``RUN:STEP`` (a sweep step)."""
    run, sep, step = ref.rpartition(":")
    if sep and step.isdigit() and run:
        return run, int(step)
    return ref, None


def load_subject(conn: sqlite3.Connection, ref: str) -> Subject:
    name, step = parse_ref(ref)
    run_id = resolve_run(conn, name)
    results = [r for r in db.bench_rows(conn, [run_id]) if step is None or r["step"] == step]
    if step is not None and not results:
        steps = sorted({r["step"] for r in db.bench_rows(conn, [run_id])})
        raise UserError(f"run {run_id} has no step {step}",
                        f"its steps are {', '.join(map(str, steps)) or 'none with results'}")
    subject = Subject(run_id, step, run_id if step is None else f"{run_id}:{step}")
    for r in results:
        samples = json.loads(r["samples_ts"]) if r["samples_ts"] else [r["avg_ts"]]
        key = f"{r['test']} t/s" + (f" x{r['n_servers']}" if step is None and _steps(results) else "")
        subject.metrics.setdefault(key, []).extend(float(x) for x in samples if x is not None)
    servers = db.rows(conn, "servers", run_id)
    loads = [s["load_s"] for s in servers if s["load_s"] is not None]
    if loads:
        subject.metrics["load s (slowest server)"] = [max(loads)]
    memory = db.rows(conn, "memory", run_id)
    if memory:
        subject.metrics["peak MiB (highest node)"] = [max(m["peak_mib"] for m in memory)]
    if len(memory) <= 8:  # node by node while that stays readable
        for m in sorted(memory, key=lambda m: (natural(m["node"]), m["device"])):
            subject.metrics[f"peak MiB {m['node']} {m['device']}"] = [m["peak_mib"]]
    subject.facts = _facts(conn, run_id, step, results, servers)
    return subject


def _steps(results: list[dict[str, Any]]) -> bool:
    return len({r["step"] for r in results}) > 1


def _facts(conn: sqlite3.Connection, run_id: str, step: int | None,
           results: list[dict[str, Any]], servers: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    run = dict(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
    nodes = db.rows(conn, "nodes", run_id)
    steps = [s for s in db.rows(conn, "steps", run_id) if step is None or s["step"] == step]
    used = {e for s in steps for e in json.loads(s["servers"] or "[]")}
    facts: dict[str, dict[str, str]] = {
        "model": {"model": run["model"] or ""},
        "build": {n["node"]: f"{n['flavour']} {n['build']}".strip() for n in nodes},
        "nodes": {n["node"]: "in" for n in nodes},
        "servers": {}, "cache": {}, "job flags": {}, "split": {},
        "links": {n["node"]: link_text(n) for n in nodes if n["link"]},
        "setup": {},
    }
    if step is not None and steps and steps[0].get("setup"):
        facts["setup"]["setup"] = steps[0]["setup"]
    for s in servers:
        if used and s["endpoint"] not in used:
            continue
        argv = json.loads(s["argv"] or "[]")
        facts["servers"][s["endpoint"]] = " ".join(argv[1:])
        if s["cache"]:
            facts["cache"][s["endpoint"]] = s["cache_state"] or "on"
    for s in steps[:1]:
        flags = _flags(json.loads(s["argv"] or "[]")[1:])
        for flag, value in flags.items():
            if flag in ("-ts", "--tensor-split", "-ot", "--override-tensor", "-sm", "--split-mode"):
                facts["split"][flag] = value
            elif flag not in _JOB_IGNORED:
                facts["job flags"][flag] = value
    if results:
        facts["build"]["llama-bench"] = f"{results[0]['build_commit']} ({results[0]['build_number']})"
    return facts


def link_text(node: dict[str, Any]) -> str:
    """eth0, 10000 Mb/s, MTU 9000 (what is known of it)."""
    parts = [str(node["link"])]
    if node["link_mbps"]:
        parts.append(f"{node['link_mbps']} Mb/s")
    if node["mtu"]:
        parts.append(f"MTU {node['mtu']}")
    return ", ".join(parts)


def _flags(args: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out[arg] = args[i + 1]
            i += 2
        else:
            out[arg] = ""
            i += 1
    return out


def _stat(samples: list[float]) -> tuple[float, float, int]:
    n = len(samples)
    mean = statistics.fmean(samples)
    return mean, statistics.stdev(samples) if n > 1 else 0.0, n


def verdict(a: list[float], b: list[float]) -> str:
    """Whether b's mean differs from a's beyond their own spread: Welch's test at about 95 %
    (|difference| over twice its standard error); with one sample on a side, it cannot tell."""
    (ma, sa, na), (mb, sb, nb) = _stat(a), _stat(b)
    if na < 2 or nb < 2:
        return "one sample: cannot tell"
    se = math.sqrt(sa * sa / na + sb * sb / nb)
    if se == 0:
        return "beyond noise" if ma != mb else "same"
    return "beyond noise" if abs(mb - ma) > 2 * se else "within noise"


def metric_rows(subjects: list[Subject]) -> list[MetricRow]:
    names = list(dict.fromkeys(k for s in subjects for k in s.metrics))
    rows = []
    for name in names:
        values, changes, verdicts = [], [], []
        base = subjects[0].metrics.get(name)
        for i, s in enumerate(subjects):
            samples = s.metrics.get(name)
            if not samples:
                values.append("-")
            else:
                mean, sd, n = _stat(samples)
                values.append(f"{mean:.2f} ± {sd:.2f} ({n})" if n > 1 else f"{mean:.2f}")
            if i == 0:
                continue
            if base and samples:
                ma, mb = statistics.fmean(base), statistics.fmean(samples)
                changes.append(f"{100 * (mb - ma) / ma:+.1f} %" if ma else "-")
                verdicts.append(verdict(base, samples))
            else:
                changes.append("-")
                verdicts.append("not in both")
        rows.append(MetricRow(name, tuple(values), tuple(changes), tuple(verdicts)))
    return rows


def differences(a: Subject, b: Subject) -> dict[str, list[str]]:
    """What differs between two subjects, by kind: build, nodes, servers, cache, job flags,
    split, model; each entry says what changed."""
    out: dict[str, list[str]] = {}
    for kind in a.facts.keys() | b.facts.keys():
        fa, fb = a.facts.get(kind, {}), b.facts.get(kind, {})
        items = []
        keys = fa.keys() | fb.keys()
        if kind == "build":  # a node added or removed is said once, under nodes
            keys = {k for k in keys if k in fa and k in fb}
        for item in sorted(keys, key=natural):
            va, vb = fa.get(item), fb.get(item)
            if va == vb:
                continue
            if kind == "nodes":
                items.append(f"{item} {'added' if va is None else 'removed'}")
            elif va is None:
                items.append(f"{item}: added ({vb})" if vb else f"{item}: added")
            elif vb is None:
                items.append(f"{item}: removed ({va})" if va else f"{item}: removed")
            else:
                change = f"{va or 'on'} -> {vb or 'on'}"
                items.append(change if item == kind else f"{item}: {change}")
        if items:
            out[kind] = items
    return dict(sorted(out.items()))



def explain(diff: dict[str, list[str]], rows: list[MetricRow], index: int) -> str:
    """One sentence on what could explain the changes of subject ``index`` (1-based after the
    first) against the first."""
    beyond = [r.metric for r in rows if r.verdicts[index - 1] == "beyond noise"]
    if not diff:
        what = "nothing rpctui records differs"
        return (f"{what}: the changes in {', '.join(beyond)} come from something it does not "
                "record (the machine's load, thermals, the network)" if beyond else
                f"{what}, and no change is beyond noise")
    kinds = list(diff)
    if len(kinds) == 1:
        lead = f"the only difference is the {kinds[0]} ({'; '.join(diff[kinds[0]])})"
        return (f"{lead}: it explains the change in {', '.join(beyond)}" if beyond else
                f"{lead}, and no change is beyond noise")
    lead = f"{len(kinds)} things differ ({', '.join(kinds)})"
    return (f"{lead}: the change in {', '.join(beyond)} cannot be put on one of them" if beyond
            else f"{lead}, and no change is beyond noise")


def compare(conn: sqlite3.Connection, refs: list[str]) -> tuple[list[Subject], list[MetricRow]]:
    if len(refs) < 2:
        raise UserError("compare needs two runs or more", "rpctui compare RUN RUN [RUN ...] "
                        "(a run id, a part of one, last, last~1; RUN:STEP for a sweep step)")
    subjects = [load_subject(conn, ref) for ref in refs]
    return subjects, metric_rows(subjects)


def render(subjects: list[Subject], rows: list[MetricRow]) -> str:
    """The comparison as text: the metrics table, then what differs and what explains it."""
    heads = ["metric", *(f"{chr(65 + i)}" for i in range(len(subjects)))]
    for i in range(1, len(subjects)):
        heads += [f"{chr(65 + i)} vs A", "verdict" if len(subjects) == 2 else f"{chr(65 + i)} verdict"]
    body = []
    for r in rows:
        cells = [r.metric, *r.values]
        for change, v in zip(r.changes, r.verdicts, strict=True):
            cells += [change, v]
        body.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(heads)]
    lines = [f"{chr(65 + i)}: {s.label}" for i, s in enumerate(subjects)] + [""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
              for cells in body]
    for i in range(1, len(subjects)):
        diff = differences(subjects[0], subjects[i])
        lines += ["", f"{chr(65 + i)} against A: {explain(diff, rows, i)}."]
        for kind, items in diff.items():
            shown = items if len(items) <= 6 else items[:4]
            lines += [f"  {kind}: {item}" for item in shown]
            if len(shown) < len(items):
                lines.append(f"  {kind}: ... and {len(items) - len(shown)} more")
    return "\n".join(lines) + "\n"
