"""Sampler cost on a node: CPU share of one core and resident memory at 2 Hz.

Runs the real sampler agent (the same bytes rpctui sends over SSH) on this machine for
SECONDS, watching a real rpc-server's process group and port (so its processes and the
kernel's per-connection TCP counters are read every tick), then reads the agent's own CPU
time plus that of any children it reaped, and its peak resident memory (VmHWM).
Targets: at most 0.5 % of one core, at most 30 MB resident.

    .venv/bin/python bench/sampler_cost.py [SECONDS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.engine.sampling import Sampler  # noqa: E402 - after the sys.path line above
from rpctui.hosts.base import launcher_argv  # noqa: E402 - after the sys.path line above
from rpctui.hosts.local import LocalHost  # noqa: E402 - after the sys.path line above
from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def main(seconds: float) -> None:
    server_bin = Path(ensure_build("mainline").bin_dir) / "ggml-rpc-server"
    host = LocalHost()
    server = await host.spawn(launcher_argv([str(server_bin), "-p", "50990"], stdbuf=True),
                              merge_stderr=True)
    samples = []
    sampler = Sampler("here", host, sys.executable, 0.5, samples.append, time.monotonic)
    try:
        await sampler.start()
        assert sampler.pid and server.pgid
        await sampler.watch(server.pgid, "127.0.0.1:50990", 50990)
        await asyncio.sleep(1.0)  # start-up (interpreter, imports) is not the steady cost
        cpu0, t0 = cpu_seconds(sampler.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = cpu_seconds(sampler.pid), time.monotonic()
        hwm = hwm_kib(sampler.pid)
    finally:
        await sampler.stop()
        if server.pgid:
            await host.kill_groups([server.pgid])
    share = 100 * (cpu1 - cpu0) / (t1 - t0)
    print(f"sampler cost at 2 Hz over {t1 - t0:.0f} s ({len(samples)} samples, one rpc-server "
          f"watched, its port's TCP counters read every tick)")
    print(f"  CPU {share:.2f} % of one core  (target <= 0.5 %)")
    print(f"  peak resident {hwm / 1024:.1f} MB  (target <= 30 MB)")


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
