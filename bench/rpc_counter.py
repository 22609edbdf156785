"""The node-side command counter's own cost: CPU seconds per rpc-server debug line.

Feeds the real GGML_RPC_DEBUG log in tests/fixtures (a mainline rpc-server's, 319 lines)
repeated to about a million lines through rpctui's counter (rpctui/hosts/agents/rpccount.py,
as the breakdown starts it) and through plain `cat`, and prints the CPU time each took per
line, and what that is at the line rate of the monitoring-tax rig (about 3,500 lines a second
over four servers at 110 t/s).

    .venv/bin/python bench/rpc_counter.py
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.engine.servers import counted_argv  # noqa: E402 - after the sys.path line above

LOG = ROOT / "tests" / "fixtures" / "mainline-rpc-server-debug.log"
RIG_LINES_PER_S = 3500


def counter_cpu(big: str) -> float:
    """CPU seconds the counter's relay took over the whole file (read from /proc while the
    program after it still runs: the relay is no one's waited-for child)."""
    argv, _ = counted_argv(sys.executable, ["sh", "-c", f"cat {big}; echo END; sleep 30"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line == b"END\n":
                break
        pids = subprocess.run(["pgrep", "-g", str(proc.pid), "-x", "rpctui-count"],
                              capture_output=True, text=True).stdout.split()
        stat = Path(f"/proc/{pids[0]}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def cat_cpu(big: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["cat", big], stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    text = LOG.read_bytes()
    repeat = 1_000_000 // text.count(b"\n")
    with tempfile.NamedTemporaryFile(suffix=".log") as big:
        big.write(text * repeat)
        big.flush()
        lines = text.count(b"\n") * repeat
        cat = min(cat_cpu(big.name) for _ in range(3))
        counted = min(counter_cpu(big.name) for _ in range(3))
    per_line = counted / lines
    print(f"rpc counter: {lines} real debug lines, best of 3")
    print(f"  cat writing them {cat:.2f} s CPU; the counter reading them {counted:.2f} s CPU")
    print(f"  the counter: {per_line * 1e6:.2f} us CPU a line; at {RIG_LINES_PER_S} lines/s "
          f"that is {per_line * RIG_LINES_PER_S * 100:.2f} % of one core")


if __name__ == "__main__":
    main()
