"""The run database: one SQLite file in the user's data directory, a row set per run.

It holds llama-bench's own ``llama_bench`` table, column for column as ``llama-bench -o sql``
of the pinned mainline build creates it, so llama.cpp's ``scripts/compare-llama-bench.py``
reads it unchanged; and beside it what llama-bench does not record: the run, its nodes
(builds, RPC protocol, devices), its rpc-servers (flags, bind address, tensor cache cold or
warm, load time and bytes), each job step, peak memory per node and device, warnings and
failures, and the plan against what was allocated. ``bench`` ties each llama_bench row to its
run, step and servers by rowid (rpctui never VACUUMs, which could renumber rowids).

A run is written in one transaction as it ends (a crash mid-write leaves the database as it
was; the run's JSONL recording is imported on the next ``rpctui history``); writing a run
again replaces it. The recordings stay the source: a database of an older format is dropped
and filled again from them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rpctui.paths import data_dir, private_dir

if TYPE_CHECKING:  # the listing commands need no summing up: kept out of their start-up
    from rpctui.history.summary import RunRecord

#: ``llama-bench -o sql``'s CREATE TABLE, mainline (llama-cpp-python 0.3.36, build 11312):
#: tests/fixtures/mainline-bench-sql.txt is that build's output, and a test holds them equal.
LLAMA_BENCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("build_commit", "TEXT"), ("build_number", "INTEGER"), ("cpu_info", "TEXT"),
    ("gpu_info", "TEXT"), ("backends", "TEXT"), ("model_filename", "TEXT"),
    ("model_type", "TEXT"), ("model_size", "INTEGER"), ("model_n_params", "INTEGER"),
    ("n_batch", "INTEGER"), ("n_ubatch", "INTEGER"), ("n_threads", "INTEGER"),
    ("cpu_mask", "TEXT"), ("cpu_strict", "INTEGER"), ("poll", "INTEGER"), ("type_k", "TEXT"),
    ("type_v", "TEXT"), ("n_gpu_layers", "INTEGER"), ("n_cpu_moe", "INTEGER"),
    ("split_mode", "TEXT"), ("main_gpu", "INTEGER"), ("no_kv_offload", "INTEGER"),
    ("flash_attn", "INTEGER"), ("devices", "TEXT"), ("tensor_split", "TEXT"),
    ("tensor_buft_overrides", "TEXT"), ("load_mode", "TEXT"), ("lazy_mode", "TEXT"),
    ("embeddings", "INTEGER"), ("no_op_offload", "INTEGER"), ("no_host", "INTEGER"),
    ("repack", "INTEGER"), ("fit_target", "INTEGER"), ("fit_min_ctx", "INTEGER"),
    ("n_prompt", "INTEGER"), ("n_gen", "INTEGER"), ("n_depth", "INTEGER"), ("test_time", "TEXT"),
    ("avg_ns", "INTEGER"), ("stddev_ns", "INTEGER"), ("avg_ts", "REAL"), ("stddev_ts", "REAL"),
)

RUN_COLUMNS = ("run_id", "started", "duration_s", "profile", "profile_path", "command", "model",
               "main", "n_nodes", "n_servers", "status", "exit_code", "message", "builds",
               "pp_ts", "tg_ts", "peak_mib", "n_results", "n_problems", "recording",
               "recording_bytes", "schema")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS llama_bench (
  {(',' + chr(10) + '  ').join(f'{name} {kind}' for name, kind in LLAMA_BENCH_COLUMNS)}
);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, started TEXT, duration_s REAL, profile TEXT, profile_path TEXT,
  command TEXT, model TEXT, main TEXT, n_nodes INTEGER, n_servers INTEGER, status TEXT,
  exit_code INTEGER, message TEXT, builds TEXT, pp_ts REAL, tg_ts REAL, peak_mib REAL,
  n_results INTEGER, n_problems INTEGER, recording TEXT, recording_bytes INTEGER, schema INTEGER
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS nodes (
  run_id TEXT, node TEXT, hostname TEXT, flavour TEXT, build TEXT, protocol TEXT,
  devices TEXT, backends TEXT, mem_total_mib INTEGER, link TEXT, link_mbps INTEGER, mtu INTEGER
);
CREATE INDEX IF NOT EXISTS nodes_run ON nodes (run_id);
CREATE TABLE IF NOT EXISTS servers (
  run_id TEXT, endpoint TEXT, node TEXT, argv TEXT, bind TEXT, port INTEGER, devices TEXT,
  mem_mib INTEGER, threads INTEGER, cache INTEGER, cache_state TEXT, exposed INTEGER,
  transport TEXT, status TEXT, rc INTEGER, ready_s REAL, load_s REAL, load_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS servers_run ON servers (run_id);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT, step INTEGER, node TEXT, kind TEXT, argv TEXT, servers TEXT, rc INTEGER,
  elapsed_s REAL, diagnosis TEXT, setup TEXT
);
CREATE INDEX IF NOT EXISTS steps_run ON steps (run_id);
CREATE TABLE IF NOT EXISTS bench (
  run_id TEXT, step INTEGER, n_servers INTEGER, nodes TEXT, test TEXT, llama_bench_rowid INTEGER,
  samples_ts TEXT, extra TEXT
);
CREATE INDEX IF NOT EXISTS bench_run ON bench (run_id);
CREATE TABLE IF NOT EXISTS memory (
  run_id TEXT, node TEXT, device TEXT, peak_mib REAL, total_mib REAL
);
CREATE INDEX IF NOT EXISTS memory_run ON memory (run_id);
CREATE TABLE IF NOT EXISTS problems (
  run_id TEXT, t REAL, node TEXT, kind TEXT, message TEXT
);
CREATE INDEX IF NOT EXISTS problems_run ON problems (run_id);
CREATE TABLE IF NOT EXISTS plan (
  run_id TEXT, step INTEGER, device TEXT, model_planned_mib REAL, model_allocated_mib REAL,
  kv_planned_mib REAL, kv_allocated_mib REAL
);
CREATE INDEX IF NOT EXISTS plan_run ON plan (run_id);
CREATE TABLE IF NOT EXISTS links (
  run_id TEXT, node TEXT, main TEXT, endpoint TEXT, rtt_ms REAL, rtt_min_ms REAL,
  to_mbps REAL, from_mbps REAL, seconds REAL, interface TEXT, link_mbps INTEGER, mtu INTEGER,
  flag TEXT
);
CREATE INDEX IF NOT EXISTS links_run ON links (run_id);
CREATE TABLE IF NOT EXISTS breakdown (
  run_id TEXT, step INTEGER, test TEXT, phase TEXT, tokens INTEGER, ms_per_token REAL,
  endpoint TEXT, node TEXT, compute_ms REAL, latency_ms REAL, transfer_ms REAL,
  to_bytes REAL, from_bytes REAL, round_trips REAL, rtt_ms REAL, cpu_ms REAL,
  gpu_busy_ms REAL, main_ms REAL, bottleneck TEXT
);
CREATE INDEX IF NOT EXISTS breakdown_run ON breakdown (run_id);
"""

_PER_RUN = ("nodes", "servers", "steps", "memory", "problems", "plan", "links", "breakdown")

#: The database's format (PRAGMA user_version). Everything in it is derived from the runs'
#: recordings, so a database of another format is dropped and filled again from them.
DB_VERSION = 5  # 2: nodes.link; 3: runs.recording_bytes; 4: links, breakdown; 5: steps.setup


def db_path() -> Path:
    """``$XDG_DATA_HOME/rpctui/history.sqlite``."""
    return data_dir() / "history.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    """The database, created with its tables if new."""
    path = path or db_path()
    private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # its owner's alone
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    if conn.execute("PRAGMA user_version").fetchone()[0] != DB_VERSION:
        with conn:
            for table in ("llama_bench", "runs", "bench", *_PER_RUN):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {DB_VERSION}")
    return conn


def _value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else v


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cur = conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                       [_value(v) for v in row.values()])
    return int(cur.lastrowid or 0)


def write_run(conn: sqlite3.Connection, rec: RunRecord) -> None:
    """Every row of one run, in one transaction, replacing what an earlier write left."""
    run_id = rec.run["run_id"]
    known = {name for name, _ in LLAMA_BENCH_COLUMNS}
    with conn:
        _delete(conn, run_id)
        _insert(conn, "runs", {k: rec.run.get(k) for k in RUN_COLUMNS})
        for table in _PER_RUN:
            for row in getattr(rec, table):
                _insert(conn, table, {"run_id": run_id, **row})
        for bench_row, ours in rec.bench:
            # llama-bench's row as it printed it; fields another flavour prints and the pinned
            # mainline does not have (ik's, older builds') are not columns of its table.
            rowid = _insert(conn, "llama_bench", {k: v for k, v in bench_row.items() if k in known})
            # What its table has no column for: each repetition's t/s (for the spread a
            # comparison needs) and the fields of other flavours, kept as JSON beside it.
            extra = {k: v for k, v in bench_row.items() if k not in known and k[:8] != "samples_"}
            _insert(conn, "bench", {"run_id": run_id, **ours, "llama_bench_rowid": rowid,
                                    "samples_ts": bench_row.get("samples_ts"), "extra": extra})


def _delete(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute("DELETE FROM llama_bench WHERE rowid IN "
                 "(SELECT llama_bench_rowid FROM bench WHERE run_id = ?)", (run_id,))
    for table in (*_PER_RUN, "bench", "runs"):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


def delete_run(conn: sqlite3.Connection, run_id: str) -> None:
    with conn:
        _delete(conn, run_id)


def rows(conn: sqlite3.Connection, table: str, run_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE run_id = ?",
                                          (run_id,))]


def bench_rows(conn: sqlite3.Connection, run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """llama-bench's rows of these runs, each with its run, step, servers and nodes."""
    ids = list(run_ids)
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    query = (f"SELECT b.run_id, b.step, b.n_servers, b.nodes, b.test, b.samples_ts, b.extra, "
             f"lb.* FROM bench b "
             f"JOIN llama_bench lb ON lb.rowid = b.llama_bench_rowid WHERE b.run_id IN ({marks}) "
             f"ORDER BY b.run_id, b.step, b.rowid")
    return [dict(r) for r in conn.execute(query, ids)]
