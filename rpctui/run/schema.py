"""The recording format's version, and how older recordings are read.

Every run's first event (RunStarted) carries ``schema``; recordings made before it was written
are version 1. Reading upgrades a recording, one version at a time, to the events this rpctui
knows; a recording from a newer rpctui is refused with a message that says so, rather than
replayed with events silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rpctui.errors import ExitCode, UserError

#: 2: RunStarted names each server's endpoint, BufferAllocated says which KV cache (sliding
#: window) a buffer belongs to, and RunStarted carries this number. Both fields have defaults,
#: so a version-1 recording reads as it is.
#: 3: the profiler's events (LinkMeasured, LinksAssessed, TokenBreakdown, TuneFinished),
#: JobStarted's setup, and NodeSample's
#: per-server traffic both ways. Only additions: a version-2 recording reads as it is, and an
#: older rpctui refuses a version-3 one instead of failing on events it does not know.
SCHEMA_VERSION = 3

Raw = dict[str, Any]


def _additions_only(events: list[Raw]) -> list[Raw]:
    return events


#: version N -> a function that turns N's raw events into N + 1's
UPGRADES: dict[int, Callable[[list[Raw]], list[Raw]]] = {1: _additions_only, 2: _additions_only}


def recording_version(events: list[Raw]) -> int | None:
    """The recording format its RunStarted names (1 before it was written); None when what it
    names is not a format number at all."""
    first = next((e for e in events if e.get("type") == "RunStarted"), None)
    version = first.get("schema", 1) if first else 1
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def upgrade(events: list[Raw], source: str) -> list[Raw]:
    """Raw events of any known version, as this version's."""
    version = recording_version(events)
    if version is None or version < 1:
        raise UserError(f"{source} names no recording format rpctui has written (schema "
                        f"{next(e for e in events if e.get('type') == 'RunStarted').get('schema')!r:.40})",
                        "the file is damaged: record the run again", ExitCode.USAGE)
    if version > SCHEMA_VERSION:
        raise UserError(f"{source} was recorded by a newer rpctui (recording format {version}; "
                        f"this one reads up to {SCHEMA_VERSION})",
                        "replay it with that rpctui, or upgrade this one", ExitCode.USAGE)
    while version < SCHEMA_VERSION:
        events = UPGRADES[version](events)
        version += 1
    return events
