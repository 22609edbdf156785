"""Keeping the run database in step with the recordings: a run as it ends, and any recording
the database does not hold yet (runs from before it existed, a run that crashed before its
end was written, recordings copied from another machine)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from rpctui.history import db

if TYPE_CHECKING:
    from rpctui.run import events as ev
    from rpctui.run.state import ClusterState


def index_run(events: list[ev.Event], recording: Path | None = None,
              conn: sqlite3.Connection | None = None, state: ClusterState | None = None) -> str:
    """Write one run's rows (replacing any earlier write of it); its run id. ``state``: the
    events folded, when the caller holds it."""
    from rpctui.history.summary import summarize

    rec = summarize(events, str(recording or ""), state)
    if recording is not None and recording.is_file():
        rec.run["recording_bytes"] = recording.stat().st_size
    own = conn is None
    conn = conn or db.connect()
    try:
        db.write_run(conn, rec)
    finally:
        if own:
            conn.close()
    return str(rec.run["run_id"])


def import_recordings(paths: list[Path] | None = None, conn: sqlite3.Connection | None = None,
                      only_new: bool = True, skipped: list[str] | None = None) -> list[str]:
    """Import recordings (default: every one in the runs directory the database lacks, and
    those it recorded as interrupted that have grown since); the run ids written. A
    recording that cannot be read (a newer rpctui's format) is passed over, and why is added
    to ``skipped``."""
    own = conn is None
    conn = conn or db.connect()
    try:
        # Recordings are known by their path (a recording's name is its run id, unless it was
        # renamed or copied in); an interrupted run's is read again when it has grown since
        # (a live run in another rpctui, which writes its end later).
        known = {r["recording"]: (r["status"], r["recording_bytes"]) for r in conn.execute(
            "SELECT recording, status, recording_bytes FROM runs")} if only_new else {}
        done = []
        for path in paths if paths is not None else _recordings():
            status, size = known.get(str(path), (None, None))
            if status is not None and (status != "interrupted" or size == path.stat().st_size):
                continue
            # Reading and summing up are imported only when there is something new: listing
            # runs starts faster without them.
            from rpctui.errors import UserError
            from rpctui.history.store import read_run
            from rpctui.run import events as ev

            try:
                events = read_run(path)
            except UserError as exc:
                if skipped is not None:
                    skipped.append(f"{path}: {exc.message}")
                continue
            if not any(isinstance(e, ev.RunStarted) for e in events):
                continue  # not a recording (or empty): nothing to say about it
            done.append(index_run(events, path, conn))
        return done
    finally:
        if own:
            conn.close()


def _recordings() -> list[Path]:
    """Recordings in the runs directory, newest first."""
    from rpctui.paths import runs_dir

    folder = runs_dir()
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if folder.is_dir() else []
