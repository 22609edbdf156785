"""`rpctui explain` on a log of any size: time and peak memory for a 1 GiB log on stdin.

The log is made on the fly and piped in (never on disk): the real logs in tests/fixtures,
then 900 lines of junk (text and every byte value), over and over, and one 64 MiB line with
no end. Prints the wall time, the rate, and the explain process's peak resident memory.

    .venv/bin/python bench/explain_huge.py [GIB]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def main() -> None:
    total = int(float(sys.argv[1]) * (1 << 30)) if len(sys.argv) > 1 else 1 << 30
    logs = sorted(FIXTURES.glob("*.log"))
    real = b"".join(p.read_bytes() for p in [*logs[:6], FIXTURES / "seed000-scaling-1.log"])
    junk = (b"llama_model_loader: - kv  42: junk " + bytes(range(32, 256)) * 4 + b"\n") * 900
    block = real + junk
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rpctui.cli.main", "explain", "-", "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdin is not None
    sent = 0
    long_line = 64 << 20
    while sent < total - long_line:
        proc.stdin.write(block)
        sent += len(block)
    for _ in range(long_line >> 20):
        proc.stdin.write(b"x" * (1 << 20))
    sent += long_line
    proc.stdin.close()
    rc = proc.wait()
    took = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"explain of a {sent / (1 << 30):.2f} GiB log on stdin: exit {rc}, {took:.1f} s "
          f"({sent / took / (1 << 20):.1f} MiB/s), peak resident memory {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
