"""Measuring where each token's time goes, during a bench job.

A test's window runs from the end of the test before it (its result row) to its own result
row; the first test's from llama-bench's first --progress line after the model loaded (its
warm-up, or its first repetition). At each boundary every node's sampler is asked for a reading
at once, and the reading that answers that very request is used: each server's busiest
thread's CPU time, GPU utilisation and the bytes on its connections; with the servers'
command counts and tensor sizes (their GGML_RPC_DEBUG lines, counted as they pass), which are
the bytes wherever a server prints them. A window holds whole tests (warm-up included) and the quiet set-up
between them, never a test's edge: on a loaded machine the progress lines reach rpctui late
(tenths of a second were seen on the 2-CPU rig), which cut a repetition's window short. When
the job ends, :func:`rpctui.profiler.breakdown.breakdown` turns each test's window into a
TokenBreakdown event.
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
LINES_SETTLE_S = 0.2  #: for the servers' last command lines to arrive after the job ended


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
        self.payload_to: dict[str, int] = {}  #: set_tensor bytes, as the debug lines say
        self.payload_from: dict[str, int] = {}  #: get_tensor bytes
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

    def command(self, endpoint: str, name: str, payload: int = 0) -> None:
        self.commands[endpoint] = self.commands.get(endpoint, 0) + 1
        if name in logs.RPC_REPLY_COMMANDS and name not in logs.RPC_SETUP_COMMANDS:
            self.replies[endpoint] = self.replies.get(endpoint, 0) + 1
        if payload:
            into = self.payload_from if name == "get_tensor" else self.payload_to
            into[endpoint] = into.get(endpoint, 0) + payload

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
        # Command lines are counted as the boundary passes, not once the readings are in:
        # lines and readings lag the servers alike, so both ends of a window lag the same.
        counts = self._counts()
        mark = len(self.snapshots) + 1 + self.step * 100_000  # unique within the run
        self.snapshots.append(asyncio.ensure_future(self._snapshot(mark, *counts)))
        return len(self.snapshots) - 1

    def _counts(self) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
        return (dict(self.replies), dict(self.commands), dict(self.payload_to),
                dict(self.payload_from))

    async def _snapshot(self, mark: int, replies: dict[str, int], commands: dict[str, int],
                        payload_to: dict[str, int],
                        payload_from: dict[str, int]) -> dict[str, Counters]:
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
            out[endpoint] = Counters(received, sent, proc.busiest_s, proc.cpu_s,
                                     self.gpu_busy.get(node, 0.0) if has_gpu else None,
                                     replies.get(endpoint, 0), commands.get(endpoint, 0),
                                     payload_to.get(endpoint, 0),
                                     payload_from.get(endpoint, 0))
        return out

    # -- the end -------------------------------------------------------------------------------

    async def finish(self) -> list[ev.TokenBreakdown]:
        """Wait for every reading, emit one breakdown per measured test."""
        snaps = await asyncio.gather(*self.snapshots, return_exceptions=True)
        if self.boundaries and len(self.boundaries) > 1:
            # The servers' lines for the last test may arrive after its result row: their
            # counts at the end of the job close the last window (nothing moves after it).
            await asyncio.sleep(LINES_SETTLE_S)
            last = snaps[self.boundaries[-1]]
            if isinstance(last, dict):
                replies, commands, to, frm = self._counts()
                snaps[self.boundaries[-1]] = {
                    ep: c._replace(replies=replies.get(ep, 0), commands=commands.get(ep, 0),
                                   payload_to=to.get(ep, 0), payload_from=frm.get(ep, 0))
                    for ep, c in last.items()}
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
