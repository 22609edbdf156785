"""Watching the rpc-servers: each one's output read into ServerLog and ServerBanner events until it
exits; and Cluster, what a watch and the job use of the engine that runs them."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rpctui.engine.sampling import COUNTER_BATCH_S
from rpctui.engine.tasks import Background
from rpctui.hosts.base import Host, LineSplitter, Spawned, agent_source
from rpctui.llama import logs
from rpctui.profile.schema import Profile
from rpctui.run import events as ev

if TYPE_CHECKING:
    from rpctui.engine.sampling import Sampler
    from rpctui.engine.tokens import TokenProfiler


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
    def restarting(self) -> bool: ...
    @property
    def background(self) -> Background: ...
    @property
    def tokens(self) -> TokenProfiler | None: ...
    @property
    def lost(self) -> Mapping[str, str]: ...

    def emit(self, event: ev.Event) -> None: ...


_COUNTER = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "rpccount.py"


def counted_argv(python: str, argv: Sequence[str]) -> tuple[list[str], str]:
    """``argv`` (an rpc-server started with GGML_RPC_DEBUG=1) run under the node's command
    counter (:mod:`rpctui.hosts.agents.rpccount`), and the file on the node where the counter
    keeps its counts for the sampler: the per-command lines stay on the node."""
    counts = f"/tmp/rpctui-rpc-{secrets.token_hex(8)}"
    source = agent_source(_COUNTER, {
        "path": counts, "batch_s": COUNTER_BATCH_S, "commands": sorted(logs.RPC_COMMANDS),
        "replies": sorted(logs.RPC_REPLY_COMMANDS), "setup": sorted(logs.RPC_SETUP_COMMANDS)})
    return [python, "-S", "-c", source.decode(), *argv], counts


class ServerWatch:
    """Reads one server's merged output into ServerLog/ServerBanner events until it exits.
    ``counts``: the file its command counter keeps, where the breakdown counts them."""

    def __init__(self, node: str, endpoint: str, spawned: Spawned, orch: Cluster,
                 counts: str | None = None) -> None:
        self.node = node
        self.endpoint = endpoint
        self.spawned = spawned
        self.orch = orch
        self.counts = counts
        self.tail: deque[str] = deque(maxlen=20)
        self.cache_dir: str | None = None  #: its tensor cache, as its banner names it
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
                           expected=self.orch.stopping or self.orch.restarting,
                           tail=tuple(self.tail)))

    def _line(self, line: str) -> None:
        self.tail.append(line)
        self.orch.emit(ev.ServerLog(node=self.node, endpoint=self.endpoint, line=line))
        protocol = logs.banner_protocol(line)
        cache = logs.banner_cache(line)
        if cache:
            self.cache_dir = cache
            sampler = self.orch.samplers.get(self.node)
            pgid = self.spawned.pgid
            if sampler and pgid:
                port = int(self.endpoint.rsplit(":", 1)[1])
                self.orch.background.start(sampler.watch(pgid, self.endpoint, port, cache,
                                                         self.counts),
                                           f"watching {self.endpoint}'s tensor cache")
        if protocol or cache or logs.is_exposure_warning(line):
            self.orch.emit(ev.ServerBanner(node=self.node, endpoint=self.endpoint,
                           protocol=protocol or "", cache_dir=cache or "",
                           exposed=logs.is_exposure_warning(line)))
