"""Log parsing throughput: llama-bench -v client logs through the job's line path.

The captured logs in tests/fixtures (real -v output of mainline, b6110 and ik_llama.cpp,
including a failing load) are repeated to about 64 MB and fed in 64 KiB chunks through
what the orchestrator runs on every chunk of the job's stderr (rpctui.runtime.LogScanner
and Job._log): the line splitter, the load-dot counter, the buffer parser and the failure
parser. Prints MB/s (target >= 50).

    .venv/bin/python bench/log_parsing.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.engine.job import LogScanner  # noqa: E402 - after the sys.path line above
from rpctui.llama.logs import parse_buffer, parse_failure  # noqa: E402 - after the sys.path line above

FIX = ROOT / "tests" / "fixtures"
LOGS = ["mainline-bench-2srv-v.log", "b6110-bench-2srv-v.log", "ik-bench-2srv-v.log",
        "mainline-bench-oom-v.log"]


def main() -> None:
    unit = "".join((FIX / name).read_text() for name in LOGS)
    text = unit * (64_000_000 // len(unit) + 1)
    chunks = [text[i:i + 65536] for i in range(0, len(text), 65536)]
    best = 0.0
    for _ in range(3):
        scanner = LogScanner()
        buffers = failures = 0
        start = time.perf_counter()
        for chunk in chunks:
            lines, may_fail = scanner.feed(chunk)
            for line in lines:
                if parse_buffer(line):
                    buffers += 1
                elif may_fail and parse_failure(line):
                    failures += 1
        elapsed = time.perf_counter() - start
        best = max(best, len(text) / elapsed / 1e6)
    print(f"log parsing: {len(text) / 1e6:.0f} MB of real -v logs, {buffers} buffer lines, "
          f"{failures} failure lines")
    print(f"  best of 3: {best:.1f} MB/s  (target >= 50)")


if __name__ == "__main__":
    main()
