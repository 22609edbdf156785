"""The sampler on each node, seen from rpctui: start it, tell it what to watch, read samples.

The agent (:mod:`rpctui.hosts.agents.sampler`) is sent over the node's existing connection
and run by its python3; it exits when its stdin closes, so it dies with the run or the
connection. Each JSON line it prints becomes a NodeSample event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpctui.hosts.base import Host, LineSplitter, Spawned, agent_argv, agent_source
from rpctui.run import events as ev

_AGENT = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "sampler.py"
MIB = 1024 * 1024


#: How often a server's command counter (rpctui/hosts/agents/rpccount.py) reads its pipe; a
#: reading the breakdown asks for waits this long and a little more, so that the counts it
#: carries include every line the server wrote before the request.
COUNTER_BATCH_S = 0.02


def sampler_source(interval_s: float, sysfs: str = "/sys", threads: bool = False) -> bytes:
    """``threads``: also read each watched server's threads (the breakdown's compute time)."""
    return agent_source(_AGENT, {"interval_s": interval_s, "sysfs": sysfs, "threads": threads,
                                 "counter_settle_s": COUNTER_BATCH_S + 0.005})


def _mib(value: Any) -> float | None:
    return round(value / MIB, 2) if isinstance(value, (int, float)) else None


def sample_event(node: str, t: float, data: dict[str, Any]) -> ev.NodeSample:
    """A sampler JSON line -> NodeSample (sizes in MiB, counters as they are)."""
    mem = data.get("mem") or {}
    gpus = tuple(ev.GpuReading(g.get("name", ""), g.get("kind", ""), _mib(g.get("vram_used")),
                               _mib(g.get("vram_total")), _mib(g.get("gtt_used")),
                               _mib(g.get("gtt_total")), g.get("util"))
                 for g in data.get("gpus") or [])
    gpu_procs: dict[str, float] = {}
    for g in data.get("gpus") or []:
        for name, used in (g.get("procs") or {}).items():
            gpu_procs[name] = gpu_procs.get(name, 0.0) + used / MIB
    procs: dict[str, Any] = data.get("procs") or {}
    total = mem.get("total_kib")
    avail = mem.get("available_kib")
    return ev.NodeSample(
        t=t, node=node,
        mem_total_mib=round(total / 1024, 1) if total else None,
        mem_available_mib=round(avail / 1024, 1) if avail is not None else None,
        gpus=gpus,
        net=tuple(ev.NetCounters(name, rx, tx)
                  for name, (rx, tx) in sorted((data.get("net") or {}).items())),
        procs=tuple(ev.ProcReading(name, round(p["rss_kib"] / 1024, 2), round(p["cpu_s"], 2),
                                   round(p.get("busiest_s", 0.0), 3))
                    for name, p in sorted(procs.items())),
        received=tuple(sorted((data.get("received") or {}).items())),
        sent=tuple(sorted((data.get("sent") or {}).items())),
        cache=tuple(sorted((k, v) for k, v in (data.get("cache") or {}).items() if v is not None)),
        gpu_procs=tuple(sorted((k, round(v, 1)) for k, v in gpu_procs.items())),
        marks=tuple(data.get("marks") or ()),
        rpc=tuple(ev.RpcCounts(name, *p["rpc"]) for name, p in sorted(procs.items())
                  if len(p.get("rpc") or ()) == 4),
    )


#: marks of fresh_reading(), far above the token profiler's (which count from 1)
FRESH_MARKS = 1 << 40


class Sampler:
    """One node's sampler process and the task that reads it."""

    def __init__(self, node: str, host: Host, python: str, interval_s: float,
                 emit: Callable[[ev.Event], None], now: Callable[[], float],
                 sysfs: str = "/sys", threads: bool = False) -> None:
        self.sysfs = sysfs
        self.threads = threads
        self.node = node
        self.host = host
        self.python = python
        self.interval_s = interval_s
        self.emit = emit
        self.now = now
        self.spawned: Spawned | None = None
        self.pid: int | None = None
        self.pid_known = asyncio.Event()
        self.oom_reply: asyncio.Future[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.errors = ""
        self._fresh: dict[int, asyncio.Future[None]] = {}
        self._next_fresh = FRESH_MARKS

    async def start(self) -> None:
        source = sampler_source(self.interval_s, self.sysfs, self.threads)
        self.spawned = await self.host.spawn(agent_argv(self.python, source, "rpctui-sampler"),
                                             launched=False)
        await self.spawned.write(source)
        self._task = asyncio.create_task(self._read())
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self.pid_known.wait(), 10)

    async def watch(self, pgid: int, name: str, port: int, cache_dir: str | None = None,
                    counts: str | None = None) -> None:
        """Read this process group's memory, CPU and port; ``counts``: its RPC command
        counter's file (:mod:`rpctui.hosts.agents.rpccount`)."""
        if self.spawned:
            await self.spawned.write(
                f"watch {pgid} {name} {port} {cache_dir or '-'} {counts or '-'}\n".encode())

    async def unwatch(self, pgid: int) -> None:
        if self.spawned:
            await self.spawned.write(f"unwatch {pgid}\n".encode())

    async def sample_now(self, mark: int = 0) -> None:
        """A reading at once; ``mark`` > 0 comes back in its NodeSample.marks."""
        if self.spawned:
            await self.spawned.write(f"now {mark}\n".encode() if mark else b"now\n")

    async def fresh_reading(self, timeout_s: float = 2.0) -> None:
        """A reading at once, returning once its NodeSample has been emitted (or after
        timeout_s): what came before it is counted before whatever starts next."""
        if not self.spawned:
            return
        mark = self._next_fresh
        self._next_fresh += 1
        self._fresh[mark] = asyncio.get_running_loop().create_future()
        await self.sample_now(mark)
        try:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._fresh[mark], timeout_s)
        finally:
            self._fresh.pop(mark, None)

    async def kernel_oom(self, pids: list[int]) -> dict[str, Any]:
        """Ask the node's kernel log whether the OOM killer took one of these PIDs."""
        if not self.spawned or not pids:
            return {"readable": False, "lines": []}
        self.oom_reply = asyncio.get_running_loop().create_future()
        await self.spawned.write(("oom " + " ".join(map(str, pids)) + "\n").encode())
        try:
            return await asyncio.wait_for(self.oom_reply, 6)
        except TimeoutError:
            return {"readable": False, "lines": []}

    async def _read(self) -> None:
        assert self.spawned is not None
        lines = LineSplitter()
        async for stream, text in self.spawned.chunks():
            if stream != "stdout":
                self.errors += text
                continue
            for line in lines.feed(text):
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if "pid" in data:
                    self.pid = int(data["pid"])
                    self.pid_known.set()
                elif "oom" in data:
                    if self.oom_reply and not self.oom_reply.done():
                        self.oom_reply.set_result(data["oom"])
                else:
                    self.emit(sample_event(self.node, self.now(), data))
                    for mark in data.get("marks") or ():
                        waiting = self._fresh.get(mark)
                        if waiting is not None and not waiting.done():
                            waiting.set_result(None)

    async def stop(self) -> None:
        """Close its stdin (it exits on EOF) and wait for the reader."""
        if self.spawned:
            await self.spawned.close_stdin()
        if self._task:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
