"""A run's recording as it happens: every event appended to its JSONL file (flushed, so a
crash loses nothing seen), and the run written into the run database as it ends."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from rpctui.history.index import index_run
from rpctui.paths import private_dir, runs_dir
from rpctui.run import events as ev
from rpctui.run.state import ClusterState


class Recorder:
    """Appends events to ``<runs_dir>/<run_id>.jsonl`` as they happen; :meth:`close` also
    writes the run into the run database."""

    def __init__(self, run_id: str, folder: Path | None = None) -> None:
        folder = private_dir(folder or runs_dir())
        self.path = folder / f"{run_id}.jsonl"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self.events: list[ev.Event] = []
        self.failed = ""  #: why the recording stopped (a full disk), once it has

    def write(self, event: ev.Event) -> str:
        """Append one event; "" while the recording goes well, and once, when it stops (a
        full disk), why: the run goes on, the recording ends there, the run database is left
        alone (a replay skips the torn last line)."""
        self.events.append(event)
        if self.failed:
            return ""
        try:
            self._fh.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
            self._fh.flush()
        except OSError as exc:
            self.failed = (f"the run's recording stopped at {self.path} ({exc.strerror or exc}); "
                           f"the run goes on, unrecorded from here")
            with contextlib.suppress(OSError):
                self._fh.close()
            return self.failed
        return ""

    def close(self, state: ClusterState | None = None) -> str:
        """Close the recording and write the run into the database: "" when done, else why
        not (the recording is whole, and `rpctui history` imports it later). ``state``: the
        run's events folded, which the caller holds (it saves folding them again)."""
        if self.failed:
            return "the run database was not updated with this partial run"
        try:
            self._fh.close()
        except OSError as exc:
            return f"the run's recording {self.path} could not be completed ({exc.strerror})"
        try:
            index_run(self.events, self.path, state=state)
        except (sqlite3.Error, OSError) as exc:
            return f"the run database was not updated ({exc}); `rpctui history import` retries"
        return ""
