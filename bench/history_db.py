"""The run database's costs (issue 11's targets):

1. what it adds to the end of a run on the 4-node rig: summing up and writing
   tests/fixtures/rig4-midload-warning.jsonl (a real 4-node rig run), best of 5 (target 50 ms);
2. `rpctui history` on a database of 10,000 runs: the command as a user runs it (a new
   process, listing with filters), median of 5 (target 300 ms); the database is filled with
   the rig4 run written 10,000 times under new ids and dates;
3. importing a 32-node, 10-minute recording (target 2 s): the real 32-node recording
   (tests/fixtures/rig32-2hz.jsonl, 16 s) with its sampling stretched to 10 minutes: its
   samples repeated, shifted in time, 2 Hz per node as recorded.

    .venv/bin/python bench/history_db.py
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.history import db  # noqa: E402 - after the sys.path line above
from rpctui.history.index import import_recordings, index_run  # noqa: E402 - the same
from rpctui.history.store import read_run  # noqa: E402 - the same
from rpctui.history.summary import summarize  # noqa: E402 - the same
from rpctui.run import events as ev  # noqa: E402 - the same
from rpctui.run.state import fold_all  # noqa: E402 - the same

FIXTURES = ROOT / "tests" / "fixtures"


def end_of_run(home: Path) -> float:
    """As Recorder.close does it: the face hands over the state it folded during the run."""
    events = read_run(FIXTURES / "rig4-midload-warning.jsonl")
    state = fold_all(events)
    conn = db.connect(home / "end.sqlite")
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        index_run(events, None, conn, state)
        best = min(best, time.perf_counter() - t0)
    return best


def ten_thousand(home: Path) -> tuple[float, float, int]:
    conn = db.connect(home / "rpctui" / "history.sqlite")
    rec = summarize(read_run(FIXTURES / "rig4-midload-warning.jsonl"))
    t0 = time.perf_counter()
    first = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for i in range(10_000):  # a run every 50 minutes, all year
        started = first + datetime.timedelta(minutes=50 * i)
        run = dict(rec.run, run_id=f"bench-{i:05d}", recording="",
                   started=started.isoformat(timespec="seconds"),
                   n_nodes=1 + i % 8, profile=("rig", "strix", "h100")[i % 3])
        db.write_run(conn, dataclasses.replace(rec, run=run))
    fill = time.perf_counter() - t0
    count = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    conn.close()
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "rpctui.cli", "history", "--profile", "strix",
                              "--nodes", "2-4", "--since", "2026-03-01"], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
    assert out.stdout.count("\n") == 51, out.stdout[:500]  # the header and 50 runs
    return statistics.median(times), fill, count


def long_recording(home: Path) -> tuple[float, int, float]:
    events = read_run(FIXTURES / "rig32-2hz.jsonl")
    samples = [e for e in events if isinstance(e, ev.NodeSample)]
    span = max(e.t for e in samples) - min(e.t for e in samples)
    head = [e for e in events if not isinstance(e, ev.NodeSample | ev.RunFinished)]
    tail = [e for e in events if isinstance(e, ev.RunFinished)]
    stretched: list[ev.Event] = list(head)
    shift = 0.0
    while shift < 600:
        stretched += [dataclasses.replace(e, t=e.t + shift) for e in samples]
        shift += span
    stretched += [dataclasses.replace(e, t=e.t + shift) for e in tail]
    stretched.sort(key=lambda e: e.t)
    path = home / "rpctui" / "runs" / "rig32-10min.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for e in stretched:
            fh.write(json.dumps(e.to_dict(), separators=(",", ":")) + "\n")
    conn = db.connect(home / "long.sqlite")
    t0 = time.perf_counter()
    import_recordings([path], conn, only_new=False)
    return time.perf_counter() - t0, len(stretched), path.stat().st_size / 2**20


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        print(f"end of a 4-node rig run: {1000 * end_of_run(home):.1f} ms (target <= 50 ms)")
        median, fill, count = ten_thousand(home)
        print(f"rpctui history over {count} runs, filtered: {1000 * median:.0f} ms median of 5 "
              f"(target < 300 ms; filling the database took {fill:.1f} s)")
        seconds, n, mib = long_recording(home)
        print(f"import of a 32-node, 10-minute recording ({n} events, {mib:.1f} MiB): "
              f"{seconds:.2f} s (target < 2 s)")


if __name__ == "__main__":
    main()
