"""Errors a user can cause, and the exit codes rpctui returns."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``rpctui`` returns to the shell."""

    OK = 0
    """Everything asked for ran and succeeded."""
    FAILED = 1
    """The job ran and failed (llama.cpp error, a server died, a bench row missing)."""
    USAGE = 2
    """The command line or the profile is wrong; nothing was started."""
    PREFLIGHT = 3
    """A node, build, model or port failed the preflight; nothing was started."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C or SIGTERM; everything rpctui started was ended."""


class UserError(Exception):
    """A problem the user can fix: one message naming the thing, one naming the fix."""

    def __init__(self, message: str, fix: str = "", code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.code = code

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
