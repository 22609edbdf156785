"""Measuring where each token's time goes, during a bench job.

llama-bench (run with --progress) says when each repetition starts. At every such line, and at
each result row, every node's sampler is asked for a reading at once; the readings (bytes each
way on each server's connections, its busiest thread's CPU time, GPU utilisation) and the
servers' command counts (their GGML_RPC_DEBUG lines) cut the job into windows, one per measured
repetition. When the job ends, :func:`rpctui.profiler.breakdown.breakdown` turns each test's
windows into a TokenBreakdown event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from rpctui.llama import logs
from rpctui.profiler.breakdown import Counters, Phase, Window, breakdown
from rpctui.run import events as ev

if TYPE_CHECKING:
    from rpctui.engine.sampling import Sampler

SNAPSHOT_TIMEOUT_S = 2.0
_PHASES: dict[str, Phase] = {"prompt run": "prompt", "generation run": "generation"}
_ROW_KEYS: tuple[tuple[Phase, str], ...] = (("prompt", "n_prompt"), ("generation", "n_gen"))


class TokenProfiler:
    """One job step's boundaries and windows; fed by the Job, the ServerWatches and the
    samples the orchestrator publishes."""

    def __init__(self, step: int, endpoints: Mapping[str, str],
                 samplers: Mapping[str, Sampler], links: Mapping[str, ev.LinkMeasured],
                 emit: Callable[[ev.Event], None]) -> None:
        self.step = step
        self.endpoints = dict(endpoints)  #: endpoint -> node, the servers this step uses
        self.samplers = samplers
        self.links = links
        self.emit = emit
        self.latest: dict[str, ev.NodeSample] = {}
        self.gpu_busy: dict[str, float] = {}  #: node -> GPU-busy seconds, integrated
        self.replies: dict[str, int] = {}
        self.commands: dict[str, int] = {}
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.snapshots: list[asyncio.Task[dict[str, Counters]]] = []
        self.open: tuple[int, Phase, int] | None = None  #: test, phase, its start snapshot
        self.spans: list[tuple[int, Phase, int, int]] = []  #: test, phase, start, end
        self.results: list[dict[str, object]] = []

    # -- what arrives ---------------------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        if not isinstance(event, ev.NodeSample):
            return
        old = self.latest.get(event.node)
        if old is not None and event.gpus:
            utils = [g.util_pct for g in event.gpus if g.util_pct is not None]
            if utils:
                self.gpu_busy[event.node] = (self.gpu_busy.get(event.node, 0.0)
                                             + max(utils) / 100 * max(0.0, event.t - old.t))
        self.latest[event.node] = event
        for fut in self.waiting.pop(event.node, []):
            if not fut.done():
                fut.set_result(None)

    def command(self, endpoint: str, name: str) -> None:
        self.commands[endpoint] = self.commands.get(endpoint, 0) + 1
        if name in logs.RPC_REPLY_COMMANDS:
            self.replies[endpoint] = self.replies.get(endpoint, 0) + 1

    def progress(self, p: logs.BenchProgress) -> None:
        """A --progress line: it ends the open window and may open the next."""
        self._close()
        phase = _PHASES.get(p.what)
        if phase is not None:
            self.open = (p.test, phase, self._boundary())

    def result(self, row: dict[str, object]) -> None:
        """A result row: the test it ends has no repetition left."""
        self.results.append(row)
        self._close()

    def _close(self) -> None:
        if self.open is not None:
            test, phase, start = self.open
            self.spans.append((test, phase, start, self._boundary()))
            self.open = None

    # -- boundaries ----------------------------------------------------------------------------

    def _boundary(self) -> int:
        # Command lines are counted as the boundary passes, not once the readings are in:
        # lines and readings lag the servers alike, so both ends of a window lag the same.
        counts = (dict(self.replies), dict(self.commands))
        self.snapshots.append(asyncio.ensure_future(self._snapshot(*counts)))
        return len(self.snapshots) - 1

    async def _snapshot(self, replies: dict[str, int],
                        commands: dict[str, int]) -> dict[str, Counters]:
        loop = asyncio.get_running_loop()
        futures = []
        for node, sampler in self.samplers.items():
            if node in set(self.endpoints.values()):
                fut: asyncio.Future[None] = loop.create_future()
                self.waiting.setdefault(node, []).append(fut)
                futures.append(fut)
                await sampler.sample_now()
        if futures:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(*futures), SNAPSHOT_TIMEOUT_S)
        out: dict[str, Counters] = {}
        for endpoint, node in self.endpoints.items():
            sample = self.latest.get(node)
            if sample is None:
                continue
            proc = next((p for p in sample.procs if p.endpoint == endpoint), None)
            received = dict(sample.received).get(endpoint)
            sent = dict(sample.sent).get(endpoint)
            if proc is None or received is None or sent is None:
                continue
            has_gpu = any(g.util_pct is not None for g in sample.gpus)
            out[endpoint] = Counters(received, sent, proc.busiest_s, proc.cpu_s,
                                     self.gpu_busy.get(node, 0.0) if has_gpu else None,
                                     replies.get(endpoint, 0), commands.get(endpoint, 0))
        return out

    # -- the end -------------------------------------------------------------------------------

    async def finish(self) -> list[ev.TokenBreakdown]:
        """Close the last window, wait for every reading, emit one breakdown per test and
        phase measured."""
        self._close()
        snaps = await asyncio.gather(*self.snapshots, return_exceptions=True)
        windows: list[Window] = []
        for test, phase, first, last in self.spans:
            start, end = snaps[first], snaps[last]
            if isinstance(start, BaseException) or isinstance(end, BaseException):
                continue
            windows.append(Window(test, phase, start, end))
        out: list[ev.TokenBreakdown] = []
        for index, row in enumerate(self.results, start=1):
            mine = [w for w in windows if w.test == index]
            for phase, key in _ROW_KEYS:
                n = row.get(key)
                avg_ns = row.get("avg_ns")
                if not isinstance(n, int) or n <= 0 or not isinstance(avg_ns, (int, float)):
                    continue
                other = row.get("n_gen" if phase == "prompt" else "n_prompt")
                if isinstance(other, int) and other > 0:
                    continue  # a pp+tg test: llama-bench times both together
                label = f"pp{n}" if phase == "prompt" else f"tg{n}"
                b = breakdown(self.step, label, phase, n, avg_ns / 1e6 / n, mine,
                              self.endpoints, self.links)
                if b is not None:
                    self.emit(b)
                    out.append(b)
        return out
