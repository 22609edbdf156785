"""What runs while a run runs: server watchers, the job reader, and resolving local paths.

A ServerWatch reads one rpc-server's output into events until it exits; a Job
reads the job's stdout (results) and stderr (the loading log) into events and
works out why it failed, naming the server or node responsible.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from rpctui.engine.tasks import Background
from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import CRASH_SIGNALS, Host, LineSplitter, Spawned, exit_signal_name
from rpctui.llama import logs
from rpctui.llama.bench import BenchStream
from rpctui.profile.schema import Node, Profile
from rpctui.run import events as ev

if TYPE_CHECKING:
    from rpctui.engine.sampling import Sampler


class Cluster(Protocol):
    """What a ServerWatch and a Job use of the engine that runs them (the Orchestrator is one):
    a way to emit, the profile, the hosts, the other watches and samplers, a stopping flag."""

    @property
    def profile(self) -> Profile: ...
    @property
    def hosts(self) -> Mapping[str, Host]: ...
    @property
    def samplers(self) -> Mapping[str, Sampler]: ...
    @property
    def watches(self) -> Mapping[str, ServerWatch]: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def background(self) -> Background: ...

    def emit(self, event: ev.Event) -> None: ...


LOAD_SETTLE_S = 0.3


class DotCounter:
    """The client's load dots: llama.cpp prints '.' at the start of a line as the weights go
    out (each dot is at least one percent more), so the count is a floor on overall progress.
    Chunks may end anywhere, a run of dots included."""

    _RUN = re.compile(r"(?m)^\.+")

    def __init__(self) -> None:
        self.count = 0
        self._open = True  # the previous chunk ended at a line start or inside a leading run

    def feed(self, text: str) -> bool:
        before = self.count
        if "\n." in text or (self._open and text.startswith(".")):
            self._count_runs(text)
        nl = text.rfind("\n")
        tail = text[nl + 1:]
        if nl >= 0:
            self._open = tail.strip(".") == ""
        elif text:
            self._open = self._open and text.strip(".") == ""
        return self.count != before

    def _count_runs(self, text: str) -> None:
        for m in self._RUN.finditer(text):
            if m.start() == 0 and not self._open:
                continue
            self.count += m.end() - m.start()


class LogScanner:
    """A job's stderr: complete lines, load dots, and whether a chunk can hold a failure line
    (a failure's words may straddle two chunks, so the end of the last one is kept)."""

    def __init__(self) -> None:
        self.lines = LineSplitter()
        self.dots = DotCounter()
        self._tail = ""

    def feed(self, text: str, count_dots: bool = True) -> tuple[list[str], bool]:
        hint = logs.may_fail(self._tail + text)
        self._tail = text[-64:]
        if count_dots:
            self.dots.feed(text)
        return self.lines.feed(text), hint


class ServerWatch:
    """Reads one server's merged output into ServerLog/ServerBanner events until it exits."""

    def __init__(self, node: str, endpoint: str, spawned: Spawned, orch: Cluster) -> None:
        self.node = node
        self.endpoint = endpoint
        self.spawned = spawned
        self.orch = orch
        self.tail: deque[str] = deque(maxlen=20)
        self.exited = asyncio.Event()
        self.rc: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def done(self) -> None:
        if self._task:
            await self._task

    def tail_text(self, n: int = 8) -> str:
        lines = [line for line in self.tail if line.strip()][-n:]
        return ("; last lines:\n    " + "\n    ".join(lines)) if lines else ""

    async def _read(self) -> None:
        split = LineSplitter()
        try:
            async for _stream, text in self.spawned.chunks():
                for line in split.feed(text):
                    self._line(line)
            for line in split.flush():
                self._line(line)
            self.rc = await self.spawned.wait()
        finally:
            self.exited.set()
            self.orch.emit(ev.ServerExited(node=self.node, endpoint=self.endpoint,
                           rc=self.rc if self.rc is not None else -1,
                           expected=self.orch.stopping, tail=tuple(self.tail)))

    def _line(self, line: str) -> None:
        self.tail.append(line)
        self.orch.emit(ev.ServerLog(node=self.node, endpoint=self.endpoint, line=line))
        protocol = logs.banner_protocol(line)
        cache = logs.banner_cache(line)
        if cache:
            sampler = self.orch.samplers.get(self.node)
            pgid = self.spawned.pgid
            if sampler and pgid:
                port = int(self.endpoint.rsplit(":", 1)[1])
                self.orch.background.start(sampler.watch(pgid, self.endpoint, port, cache),
                                           f"watching {self.endpoint}'s tensor cache")
        if protocol or cache or logs.is_exposure_warning(line):
            self.orch.emit(ev.ServerBanner(node=self.node, endpoint=self.endpoint,
                           protocol=protocol or "", cache_dir=cache or "",
                           exposed=logs.is_exposure_warning(line)))


class Job:
    """The job's process: results from stdout, the loading log from stderr, then a verdict."""

    def __init__(self, orch: Cluster, spawned: Spawned, step: int, n_servers: int) -> None:
        self.orch = orch
        self.spawned = spawned
        self.step = step
        self.n_servers = n_servers
        self.failures: list[logs.Failure] = []
        self.tail: deque[str] = deque(maxlen=30)
        self.rows = 0
        self.loaded = False
        self.stderr = LogScanner()
        self.buffer_lines = logs.BufferLines()

    async def run(self, timeout_s: float | None) -> int:
        start = time.monotonic()
        reader = asyncio.create_task(self._read())
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout_s)
        except TimeoutError:
            timed_out = True
            host = self.orch.hosts[self.orch.profile.main_node.label]
            if self.spawned.pgid:
                await host.kill_groups([self.spawned.pgid])
            await reader
        rc = await self.spawned.wait()
        diagnosis, culprit = self._diagnose(rc, timed_out, timeout_s, await self._kernel_oom())
        self.orch.emit(ev.JobFinished(rc=rc, elapsed_s=round(time.monotonic() - start, 4),
                       step=self.step, diagnosis=diagnosis, culprit=culprit))
        return rc if rc != 0 or self.rows or self.orch.profile.job.kind != "bench" else 1

    async def _read(self) -> None:
        out_lines = LineSplitter()
        bench = BenchStream()
        is_bench = self.orch.profile.job.kind == "bench"
        async for stream, text in self.spawned.chunks():
            if stream == "stdout":
                if is_bench:
                    for row in bench.feed(text):
                        self.rows += 1
                        self.orch.emit(ev.BenchResult(step=self.step, n_servers=self.n_servers,
                                       row=row))
                else:
                    for line in out_lines.feed(text):
                        self.orch.emit(ev.JobOutput(text=line))
            else:
                dots = self.stderr.dots.count
                lines, may_fail = self.stderr.feed(text, count_dots=not self.loaded)
                if self.stderr.dots.count != dots:
                    count = self.stderr.dots.count
                    self.orch.emit(ev.LoadProgress(endpoint="", done_bytes=count,
                                   percent=float(min(count, 99)), source="dots"))
                for line in lines:
                    self._log(line, may_fail)
        for line in self.stderr.lines.flush():
            self._log(line, True)
        for line in out_lines.flush():
            self.orch.emit(ev.JobOutput(text=line))

    def _log(self, line: str, may_fail: bool) -> None:
        self.tail.append(line)
        self.orch.emit(ev.JobLog(stream="stderr", line=line))
        buf = self.buffer_lines.feed(line)
        if buf:
            if buf.kind == "kv" and not self.loaded:
                # The KV cache comes once every weight has been sent: the load is over, so
                # ask each sampler for a reading now, whose counters cover the whole load.
                self.loaded = True
                self.orch.background.start(self._sample_after_load(), "sampling after the load")
            self.orch.emit(ev.BufferAllocated(kind=buf.kind, device=buf.device,
                           endpoint=buf.endpoint, mib=buf.mib, step=self.step, cache=buf.cache))
            return
        failure = logs.parse_failure(line) if may_fail else None
        if failure:
            self.failures.append(failure)

    def _diagnose(self, rc: int, timed_out: bool, timeout_s: float | None,
                  kernel: dict[str, str]) -> tuple[str, str]:
        if timed_out:
            return f"the job ran past its {timeout_s:g} s timeout and was stopped", ""
        dead = [w for w in self.orch.watches.values() if w.exited.is_set() and not self.orch.stopping]
        if rc == 0 and not dead:
            if self.orch.profile.job.kind == "bench" and not self.rows:
                return "llama-bench exited 0 but printed no result", ""
            return "", ""
        cause = logs.root_cause(self.failures)
        culprit = ""
        if cause and cause.endpoint:
            culprit = self._node_of(cause.endpoint) or cause.endpoint
        if dead and (cause is None or cause.kind in ("crashed", "connect", "handshake")):
            w = dead[0]
            sig = exit_signal_name(w.rc)
            if sig == "SIGKILL" and kernel.get(w.endpoint):
                how = (f"was killed by the kernel's OOM killer on {w.node} (kernel log: "
                       f"{kernel[w.endpoint]})")
            elif sig == "SIGKILL" and w.endpoint in kernel:
                how = f"was killed by SIGKILL; {w.node}'s kernel log shows no OOM kill"
            elif sig == "SIGKILL":
                how = "was killed (SIGKILL: the kernel's OOM killer or a person)"
            elif sig in CRASH_SIGNALS:
                how = f"crashed ({sig})"
            elif sig:
                how = f"was ended by {sig} (from a person or another program, not rpctui)"
            else:
                how = f"exited with code {w.rc}"
            return (f"server {w.endpoint} on node {w.node} {how} during the job"
                    + w.tail_text(4), w.node)
        if cause:
            where = f" (node {culprit})" if culprit and culprit != cause.endpoint else ""
            return cause.message + where, culprit
        last = [line for line in self.tail if line.strip()][-3:]
        return f"the job exited with code {rc}: " + " | ".join(last), ""

    async def _sample_after_load(self) -> None:
        # RPC set_tensor is not acknowledged: the last bytes may still be in flight when the
        # client moves on. A short wait lets the servers' counters catch up.
        await asyncio.sleep(LOAD_SETTLE_S)
        for sampler in self.orch.samplers.values():
            await sampler.sample_now()

    async def _kernel_oom(self) -> dict[str, str]:
        """For servers ended by SIGKILL: endpoint -> what their node's kernel log says."""
        said: dict[str, str] = {}
        for w in self.orch.watches.values():
            if exit_signal_name(w.rc) != "SIGKILL" or not w.spawned.child_pid:
                continue
            sampler = self.orch.samplers.get(w.node)
            if sampler is None:
                continue
            found = await sampler.kernel_oom([w.spawned.child_pid])
            if found["lines"]:
                said[w.endpoint] = found["lines"][-1].strip()
            elif found["readable"]:
                said[w.endpoint] = ""
        return said

    def _node_of(self, ep: str) -> str:
        watch = self.orch.watches.get(ep)
        return watch.node if watch else ""


async def resolve_bin_dirs(node: Node, progress: Callable[[str, float | None], None] | None
                           ) -> list[str]:
    """The directories to search for binaries on a node; builds rpctui's own when asked."""
    if node.bin_dir:
        return [node.bin_dir]
    if node.build:
        from rpctui.llama.build import ensure_build

        build = await asyncio.to_thread(ensure_build, node.build, (), progress)
        return [str(build.bin_dir)]
    return []


async def resolve_model(profile: Profile) -> str:
    """The model path on the main node; a builtin model is generated here first."""
    job = profile.job
    name = job.builtin_model
    if name is None:
        return job.model
    from rpctui.llama.tinymodel import BUILTIN, ensure_model

    if name not in BUILTIN:
        raise UserError(f"{profile.path}: job.model: no builtin model {name!r}",
                        f"use one of: {', '.join('builtin:' + n for n in BUILTIN)}")
    if not profile.main_node.is_local:
        raise UserError(f"{profile.path}: job.model: builtin models exist on this machine only, "
                        f"but the main node is {profile.main_node.label}",
                        "copy the model to the main node and give its path", ExitCode.USAGE)
    return str(await asyncio.to_thread(ensure_model, name))
