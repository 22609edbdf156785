"""Measuring where each token's time goes, during a bench job.

A test's window runs from the end of the test before it (its result row) to its own result
row; the first test's from llama-bench's first --progress line after the model loaded (its
warm-up, or its first repetition). At each boundary every node's sampler is asked for a reading
at once, and the reading that answers that very request is used: each server's busiest
thread's CPU time, GPU utilisation, the bytes on its connections, and the servers' command
counts and tensor sizes (their GGML_RPC_DEBUG lines, counted on the node by
:mod:`rpctui.hosts.agents.rpccount`, so that no line crosses the network). A window holds
whole tests (warm-up included) and the quiet set-up between them, never a test's edge: on a
loaded machine the progress lines reach rpctui late (tenths of a second were seen on the 2-CPU
rig), which cut a repetition's window short. When the job ends,
:func:`rpctui.profiler.breakdown.breakdown` turns each test's window into a TokenBreakdown
event.
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
        #: (node, mark) -> the reading that answered that boundary's request, and who waits
        self.answers: dict[tuple[str, int], ev.NodeSample] = {}
        self.waiting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.snapshots: list[asyncio.Task[dict[str, Counters]]] = []
        self.boundaries: list[int] = []  #: snapshot index of each boundary, in order
        self.first_warmed = False  #: the first window opened at a warm-up, not a repetition
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
        for mark in event.marks:
            self.answers[(event.node, mark)] = event
            fut = self.waiting.pop((event.node, mark), None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        self.latest[event.node] = event

    def progress(self, p: logs.BenchProgress) -> None:
        """A --progress line: the first after the load opens the first test's window."""
        if not self.boundaries and p.what != "starting":
            self.boundaries.append(self._boundary())
            self.first_warmed = p.what.startswith("warmup")

    def result(self, row: dict[str, object]) -> None:
        """A result row: it closes its test's window (and opens the next test's)."""
        self.results.append(row)
        if self.boundaries:
            self.boundaries.append(self._boundary())

    # -- boundaries ----------------------------------------------------------------------------

    def _boundary(self) -> int:
        mark = len(self.snapshots) + 1 + self.step * 100_000  # unique within the run
        self.snapshots.append(asyncio.ensure_future(self._snapshot(mark)))
        return len(self.snapshots) - 1

    async def _snapshot(self, mark: int) -> dict[str, Counters]:
        """Every server's counters as its node's sampler read them just after this boundary:
        the reading that answers this boundary's own request, never an earlier one."""
        loop = asyncio.get_running_loop()
        futures = []
        for node, sampler in self.samplers.items():
            if node in set(self.endpoints.values()):
                fut: asyncio.Future[None] = loop.create_future()
                self.waiting[(node, mark)] = fut
                futures.append(fut)
                await sampler.sample_now(mark)
        if futures:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(*futures), SNAPSHOT_TIMEOUT_S)
        out: dict[str, Counters] = {}
        for endpoint, node in self.endpoints.items():
            sample = self.answers.get((node, mark))
            if sample is None:
                continue  # no answer in time: the windows that need it are left out
            proc = next((p for p in sample.procs if p.endpoint == endpoint), None)
            received = dict(sample.received).get(endpoint)
            sent = dict(sample.sent).get(endpoint)
            if proc is None or received is None or sent is None:
                continue
            has_gpu = any(g.util_pct is not None for g in sample.gpus)
            rpc = next((r for r in sample.rpc if r.endpoint == endpoint), None)
            out[endpoint] = Counters(received, sent, proc.busiest_s, proc.cpu_s,
                                     self.gpu_busy.get(node, 0.0) if has_gpu else None,
                                     rpc.replies if rpc else 0, rpc.commands if rpc else 0,
                                     rpc.to_bytes if rpc else 0, rpc.from_bytes if rpc else 0)
        return out

    # -- the end -------------------------------------------------------------------------------

    async def finish(self) -> list[ev.TokenBreakdown]:
        """Wait for every reading, emit one breakdown per measured test."""
        snaps = await asyncio.gather(*self.snapshots, return_exceptions=True)
        out: list[ev.TokenBreakdown] = []
        for index, row in enumerate(self.results):
            if index + 1 >= len(self.boundaries):
                break
            start, end = snaps[self.boundaries[index]], snaps[self.boundaries[index + 1]]
            if isinstance(start, BaseException) or isinstance(end, BaseException):
                continue
            n_prompt, n_gen = _count(row, "n_prompt"), _count(row, "n_gen")
            avg_ns, reps = row.get("avg_ns"), row.get("samples_ns")
            if (n_prompt and n_gen) or _count(row, "n_depth") or not (n_prompt or n_gen) \
                    or not isinstance(avg_ns, (int, float)):
                continue  # pp+tg together, or a depth prefill: not one phase's tokens
            if not isinstance(reps, list):
                reps = row.get("samples_ts")
            repetitions = len(reps) if isinstance(reps, list) and reps else 5  # its default
            warmed = index > 0 or self.first_warmed
            phase: Phase = "prompt" if n_prompt else "generation"
            n = n_prompt or n_gen
            # llama-bench warms up with the whole prompt, or with one generated token.
            tokens = repetitions * n + ((n_prompt or 1) if warmed else 0)
            label = f"pp{n}" if n_prompt else f"tg{n}"
            b = breakdown(self.step, label, phase, avg_ns / 1e6 / n,
                          [Window(tokens, start, end)], self.endpoints,
                          self.links)
            if b is not None:
                self.emit(b)
                out.append(b)
        return out


def _count(row: dict[str, object], key: str) -> int:
    value = row.get(key)
    return value if isinstance(value, int) else 0
