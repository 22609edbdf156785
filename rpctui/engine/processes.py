"""The processes rpctui starts on the nodes: the rpc-servers started (and restarted with a sweep
step's settings) and watched, and at teardown every process group ended on every node and
verified gone, whichever way the run ends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rpctui.engine.servers import Cluster, ServerWatch, counted_argv
from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import Forward, Host, Spawned, launcher_argv
from rpctui.llama import argv as largv
from rpctui.llama.caps import Capabilities
from rpctui.profile.schema import Node, Profile, Server, endpoint
from rpctui.run import events as ev

READY_TIMEOUT_S = 60.0
RECONNECT_TIMEOUT_S = 4.0  #: at teardown, for a node whose connection died during the run


@dataclass
class Started:
    """A process group rpctui started, to be ended at teardown."""

    node: str
    what: str
    spawned: Spawned
    pgid: int | None


class Launcher(Cluster, Protocol):
    """What starting, restarting and ending the processes uses of the engine (the
    Orchestrator is one): beside a Cluster's, the probed nodes, the processes started, the
    SSH forwards, and the flags and the profile these functions set."""

    profile: Profile
    stopping: bool
    restarting: bool
    hosts: dict[str, Host]
    watches: dict[str, ServerWatch]
    started: list[Started]
    tunnels: dict[tuple[str, int], Forward]

    @property
    def written(self) -> Profile: ...
    @property
    def caps(self) -> Mapping[str, Capabilities]: ...
    @property
    def nodes(self) -> Mapping[str, Node]: ...
    @property
    def owner(self) -> str: ...
    @property
    def breakdown(self) -> bool: ...

    async def connect_node(self, node: Node) -> Host: ...


async def _start_server(orch: Launcher, node: Node, server: Server) -> None:
    caps = orch.caps[node.label]
    host = orch.hosts[node.label]
    ep = endpoint(node, server)
    argv, notes = largv.server_argv(caps, node, server)
    for note in notes:
        orch.emit(ev.Notice(message=note, node=node.label))
    env = {"GGML_NO_BACKTRACE": "1", "RPCTUI_OWNER": orch.owner, **node.env, **server.env}
    counts = None
    limit = server.address_space_limit_mib * 1024 if server.address_space_limit_mib else None
    if orch.breakdown and node.label in orch.samplers:
        env.setdefault("GGML_RPC_DEBUG", "1")  # a line per command: the round trips
        argv_run, counts = counted_argv(node.python, argv)  # counted on the node
    else:
        argv_run = argv
    full = launcher_argv(argv_run, env=env, limit_as_kib=limit, stdbuf=caps.has_stdbuf)
    orch.emit(ev.ServerStarting(node=node.label, endpoint=ep, argv=tuple(argv),
                                transport="ssh" if node.tunnel else "tcp"))
    spawned = await host.spawn(full, merge_stderr=True)
    orch.started.append(Started(node.label, f"rpc-server {ep}", spawned, spawned.pgid))
    orch.emit(ev.ServerStarted(node=node.label, endpoint=ep, pgid=spawned.pgid,
              pid=spawned.child_pid))
    watch = ServerWatch(node.label, ep, spawned, orch, counts)
    orch.watches[ep] = watch
    watch.start()
    sampler = orch.samplers.get(node.label)
    if sampler and spawned.pgid:
        await sampler.watch(spawned.pgid, ep, server.port, counts=counts)


async def _wait_ready(orch: Launcher, node: Node, server: Server, started_at: float) -> None:
    host = orch.hosts[node.label]
    ep = endpoint(node, server)
    watch = orch.watches[ep]
    probe_host = "127.0.0.1" if server.bind == "0.0.0.0" else server.bind
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if watch.exited.is_set():
            raise UserError(f"server {ep} on node {node.label} exited during start-up "
                            f"(exit {watch.rc})" + watch.tail_text(),
                            "read the server's last lines above; fix its settings in the "
                            "profile", ExitCode.FAILED)
        if await host.port_open(probe_host, server.port):
            orch.emit(ev.ServerReady(node=node.label, endpoint=ep,
                      elapsed_s=round(time.monotonic() - started_at, 4)))
            return
        await asyncio.sleep(0.02)
    raise UserError(f"server {ep} on node {node.label} did not accept connections within "
                    f"{READY_TIMEOUT_S:g} s" + watch.tail_text(),
                    "check the server's output above", ExitCode.FAILED)


async def start_servers(orch: Launcher) -> None:
    """Start every server in parallel; return when all accept connections (through their
    SSH forwards, for nodes with transport "ssh")."""
    start = time.monotonic()
    servers = orch.profile.servers()
    await asyncio.gather(*(_start_server(orch, n, s) for n, s in servers))
    await asyncio.gather(*(_wait_ready(orch, n, s, start) for n, s in servers))
    for node, server in servers:
        if node.tunnel and (node.tunnel, server.port) not in orch.tunnels:
            orch.tunnels[(node.tunnel, server.port)] = await orch.hosts[
                node.label].forward_local(node.tunnel, server.port, "127.0.0.1", server.port)


async def restart_servers(orch: Launcher, settings: dict[str, Any]) -> None:
    """Stop every rpc-server and start them again with these settings (a sweep step's)."""
    await stop_servers(orch)
    orch.profile = dataclasses.replace(orch.written, nodes=[
        dataclasses.replace(n, servers=[dataclasses.replace(s, **settings)
                                        for s in n.servers]) for n in orch.written.nodes])
    await start_servers(orch)


async def stop_servers(orch: Launcher) -> None:
    """End every rpc-server started (their watches told it is expected) and forget them."""
    by_node: dict[str, list[Started]] = {}
    for s in orch.started:
        if s.what.startswith("rpc-server "):
            by_node.setdefault(s.node, []).append(s)
    orch.restarting = True
    try:
        for name, items in by_node.items():
            pgids = [s.pgid for s in items if s.pgid]
            if pgids:
                await orch.hosts[name].kill_groups(pgids)
            for s in items:
                await s.spawned.close_stdin()
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    await asyncio.wait_for(s.spawned.wait(), 5)
                orch.emit(ev.ProcessGone(node=name, pgid=s.pgid or 0, what=s.what))
                orch.started.remove(s)
                if name in orch.samplers and s.pgid:
                    await orch.samplers[name].unwatch(s.pgid)
        for watch in orch.watches.values():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(watch.done(), 5)
    finally:
        orch.restarting = False
    orch.watches.clear()


async def teardown(orch: Launcher) -> None:
    """End every process group started, on every node, and verify they are gone."""
    if orch.stopping:
        return
    orch.stopping = True
    start = time.monotonic()
    orch.emit(ev.TeardownStarted(reason="run ended"))
    await orch.background.cancel_all()
    for forward in orch.tunnels.values():
        forward.close()
    orch.tunnels.clear()
    by_node: dict[str, list[Started]] = {}
    for s in orch.started:
        by_node.setdefault(s.node, []).append(s)

    async def end_node(name: str, items: list[Started]) -> None:
        host = orch.hosts[name]
        pgids = [s.pgid for s in items if s.pgid]
        if name in orch.lost and pgids:
            try:  # the old connection is dead: a new one, if the node answers now
                host = await asyncio.wait_for(orch.connect_node(orch.nodes[name]),
                                              RECONNECT_TIMEOUT_S)
                dead, orch.hosts[name] = orch.hosts[name], host
                with contextlib.suppress(Exception):
                    await dead.close()
            except (UserError, OSError, TimeoutError):
                orch.emit(ev.TeardownFailed(node=name, message=(
                    f"node {name} does not answer: its processes (process groups "
                    f"{', '.join(map(str, pgids))}) end when its sshd sees rpctui's "
                    f"connection gone (their launcher watches it)")))
                return
        if pgids:
            result = await host.kill_groups(pgids)
            if result.rc != 0:
                orch.emit(ev.TeardownFailed(node=name, message=(result.stdout + result.stderr)
                          .strip() or f"kill exited {result.rc}"))
                for s in items:
                    await s.spawned.close_stdin()
                return
        for s in items:
            await s.spawned.close_stdin()
            # Gone means reaped: the launcher has reaped its child; wait for the launcher.
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(s.spawned.wait(), 5)
            orch.emit(ev.ProcessGone(node=name, pgid=s.pgid or 0, what=s.what))
        if name in orch.samplers:
            await orch.samplers[name].stop()

    await asyncio.gather(*(end_node(n, items) for n, items in by_node.items()),
                         return_exceptions=True)
    for watch in orch.watches.values():
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(watch.done(), 5)
    for host in orch.hosts.values():
        with contextlib.suppress(Exception):
            await host.close()
    orch.emit(ev.TeardownDone(elapsed_s=round(time.monotonic() - start, 4)))
