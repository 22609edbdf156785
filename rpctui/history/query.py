"""Finding runs in the database: filters, a run named by the user, a run's listing row."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from rpctui.errors import UserError

STATUSES = ("ok", "failed", "interrupted")


@dataclass(frozen=True)
class RunFilter:
    """What `rpctui history` narrows by; every field optional."""

    profile: str = ""  #: part of the profile's name
    model: str = ""  #: part of the model file's name
    nodes: str = ""  #: a node count, or a range such as 2-4
    build: str = ""  #: part of a build ("b6110", "0c1e570", "11312")
    since: str = ""  #: a date or time, ISO (2026-12-01, 2026-12-01T10:00)
    until: str = ""
    status: str = ""  #: ok, failed, interrupted
    limit: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("profile", self.profile), ("model", self.model),
                              ("builds", self.build)):
            if value:
                clauses.append(f"{column} LIKE ?")
                args.append(f"%{value}%")
        if self.nodes:
            low, _, high = self.nodes.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise UserError(f"--nodes {self.nodes!r} is not a count or a range",
                                "give a number of nodes, such as 4, or a range, such as 2-4")
            clauses.append("n_nodes BETWEEN ? AND ?")
            args += [int(low), int(high or low)]
        if self.since:
            clauses.append("started >= ?")
            args.append(self.since)
        if self.until:
            clauses.append("started < ?")
            # a date alone means the whole of that day
            args.append(self.until + "T99" if len(self.until) == 10 else self.until)
        if self.status:
            if self.status not in STATUSES:
                raise UserError(f"--status {self.status!r} is not a run's outcome",
                                f"use one of {', '.join(STATUSES)}")
            clauses.append("status = ?")
            args.append(self.status)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def find_runs(conn: sqlite3.Connection, flt: RunFilter = RunFilter()) -> list[dict[str, Any]]:
    """Runs matching the filter, newest first."""
    where, args = flt.where()
    query = f"SELECT * FROM runs{where} ORDER BY started DESC, run_id DESC"
    if flt.limit:
        query += " LIMIT ?"
        args.append(flt.limit)
    return [dict(r) for r in conn.execute(query, args)]


def resolve_run(conn: sqlite3.Connection, ref: str) -> str:
    """A run id from what a user typed: the id, a unique part of it, the recording's path, or
    ``last`` (``last~1`` the one before it)."""
    if ref == "last" or ref.startswith("last~"):
        back = ref.partition("~")[2]
        if back and not back.isdigit():
            raise UserError(f"{ref!r} names no run", "use last, last~1, last~2, ...")
        row = conn.execute("SELECT run_id FROM runs ORDER BY started DESC, run_id DESC "
                           "LIMIT 1 OFFSET ?", (int(back or 0),)).fetchone()
        if row is None:
            raise UserError(f"there is no run {ref} in the history",
                            "run a profile first (rpctui run PROFILE), or rpctui history import")
        return str(row["run_id"])
    stem = ref.rsplit("/", 1)[-1].removesuffix(".jsonl")
    exact = conn.execute("SELECT run_id FROM runs WHERE run_id = ?", (stem,)).fetchone()
    if exact is not None:
        return str(exact["run_id"])
    matches = [r["run_id"] for r in conn.execute(
        "SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY started DESC", (f"%{stem}%",))]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise UserError(f"no run in the history matches {ref!r}",
                        "see the run ids with `rpctui history`")
    raise UserError(f"{len(matches)} runs match {ref!r} ({', '.join(matches[:3])}, ...)",
                    "give more of the run id")


def natural(name: str) -> tuple[Any, ...]:
    """A sort key that puts n2 before n10, and 10.0.0.2:50052 before 10.0.0.10:50052."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def outcome(run: dict[str, Any]) -> str:
    """How a run ended, in words: ok, failed (exit N), interrupted."""
    if run["status"] == "failed":
        return f"failed (exit {run['exit_code']})"
    return str(run["status"])


def when(run: dict[str, Any]) -> str:
    """When it started, to the minute (UTC)."""
    return str(run["started"] or "")[:16].replace("T", " ")


#: a run's listing, as `rpctui history` and the app's runs screen show it
RUN_COLUMNS = ("run", "when (UTC)", "profile", "model", "nodes", "servers", "pp t/s", "tg t/s",
               "peak GiB", "outcome")
NUMERIC_COLUMNS = frozenset({"nodes", "servers", "pp t/s", "tg t/s", "peak GiB"})


def run_row(run: dict[str, Any]) -> dict[str, str]:
    """One run's listing: every RUN_COLUMNS entry as text ("-" where it has none)."""
    def num(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, (int, float)) else "-"

    return {"run": run["run_id"], "when (UTC)": when(run), "profile": run["profile"] or "",
            "model": run["model"] or "", "nodes": str(run["n_nodes"]),
            "servers": str(run["n_servers"]), "pp t/s": num(run["pp_ts"]),
            "tg t/s": num(run["tg_ts"]),
            "peak GiB": num(run["peak_mib"] / 1024 if run["peak_mib"] else None),
            "outcome": outcome(run)}
