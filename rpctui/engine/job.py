"""The job's process: results from stdout, the loading log from stderr, then a verdict that names
the server or node responsible when it failed."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque

from rpctui.engine.servers import Cluster
from rpctui.hosts.base import CRASH_SIGNALS, LineSplitter, Spawned, exit_signal_name
from rpctui.llama import logs
from rpctui.llama.bench import BenchStream
from rpctui.run import events as ev

LOAD_SETTLE_S = 0.3
#: How long a job whose client says a server crashed waits for that server's exit to be
#: reported: the client sees the closed socket before SSH delivers the server's exit status.
SERVER_EXIT_GRACE_S = 3.0


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
        if rc != 0 and not timed_out:
            await self._await_server_exit()
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
                        if self.orch.tokens is not None:
                            self.orch.tokens.result(row)
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
        progress = logs.bench_progress(line) if line.startswith("llama-bench: ") else None
        if progress is not None:
            if self.orch.tokens is not None:
                self.orch.tokens.progress(progress)
            return  # --progress lines mark the measured windows; they are not the log
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
        if self.orch.lost:
            node, why = next(iter(self.orch.lost.items()))
            return (f"{why}; the job was ended, since llama.cpp's RPC would have waited for it "
                    f"forever", node)
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

    async def _await_server_exit(self) -> None:
        """When the client reports a crashed server, give the server's exit time to arrive so
        the verdict can name which one and how it ended."""
        cause = logs.root_cause(self.failures)
        watches = list(self.orch.watches.values())
        if (cause is None or cause.kind != "crashed" or self.orch.stopping or self.orch.lost
                or any(w.exited.is_set() for w in watches) or not watches):
            return
        waits = [asyncio.ensure_future(w.exited.wait()) for w in watches]
        try:
            await asyncio.wait(waits, timeout=SERVER_EXIT_GRACE_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()

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
