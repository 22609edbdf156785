"""`rpctui doctor PROFILE`: what `check` checks, and what breaks clusters before a run does.

After the preflight (builds and protocols equal, ports free, a worker not serving another
client, memory): for nodes with ``build``, whether the build is installed or the tools to
build it are there; free disk for the model copies `models push` would make; each server's
port reachable from the main node (a listener on the server's address and port, connected to
from the main node itself: a firewall between nodes is invisible from here); and each node's
clock against this machine's; for servers with a tensor cache (-c), the folder their
rpc-server would use, how many of the model's weights are there (for cache_fill: whether it is
filled) and the free disk for the rest. Every finding is a Finding event naming the fix;
``fix`` runs `rpctui build`, `rpctui models push` and the cache fill where they apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from rpctui.engine import processes
from rpctui.engine.cachefill import look
from rpctui.engine.links import listen_agent
from rpctui.engine.provision import (
    Builder,
    backend_of,
    install_hint,
    missing_tools,
    node_key,
)
from rpctui.engine.push import Pusher, local_sha256, stat_copies, targets
from rpctui.errors import ExitCode, UserError
from rpctui.llama.build import FLAVOURS
from rpctui.profile.schema import Node, endpoint, endpoint_host
from rpctui.run import events as ev

if TYPE_CHECKING:
    from rpctui.engine.orchestrator import Orchestrator

CLOCK_TOLERANCE_S = 1.0


def _finding(check: str, node: str, ok: bool, message: str, fix: str = "",
             fixable: bool = False) -> ev.Finding:
    return ev.Finding(check=check, node=node, ok=ok, message=message, fix=fix, fixable=fixable)


async def _builds(orch: Orchestrator) -> list[ev.Finding]:
    out = []
    builder = Builder(orch.profile, orch.hosts, orch.emit)
    for node in [n for n in orch.profile.nodes if n.build and not n.is_local]:
        info = await builder.inspect(node)
        backend = backend_of(node, info)
        key = node_key(FLAVOURS[str(node.build)], backend, info)
        if key in (info.get("installed") or {}):
            out.append(_finding("build", node.label, True, f"{node.build} for {backend} is "
                                f"installed ({key})"))
            continue
        flavour = FLAVOURS[str(node.build)]
        missing = missing_tools(info, backend, flavour)
        if missing:
            out.append(_finding("build", node.label, False, (
                f"{node.build} for {backend} is not built there, and it has no "
                f"{', '.join(missing)} to build it"), install_hint(info, missing, flavour)))
        else:
            out.append(_finding("build", node.label, False, (
                f"{node.build} for {backend} is not built there (the tools are)"),
                "rpctui build PROFILE (or doctor --fix)", fixable=True))
    return out


async def _disk(orch: Orchestrator) -> list[ev.Finding]:
    out = []
    for node, pairs in targets(orch.profile):
        there = await stat_copies(orch.hosts[node.label], node, [d for _, d in pairs], False)
        need = 0
        for (src, _), st in zip(pairs, there, strict=True):
            if not (st.get("exists") and st.get("recorded") == await asyncio.to_thread(
                    local_sha256, src)):
                need += src.stat().st_size - int(st.get("part") or 0)
        free = int(there[0].get("free") or 0)
        if not need:
            out.append(_finding("model copy", node.label, True, "has the model (verified)"))
        elif need > free:
            out.append(_finding("model copy", node.label, False, (
                f"the model needs {need / 2**30:.2f} GiB there, {free / 2**30:.2f} GiB free"),
                "free disk there, or point job.model at a disk that has room"))
        else:
            out.append(_finding("model copy", node.label, False, (
                f"lacks the model ({need / 2**30:.2f} GiB to copy, {free / 2**30:.2f} GiB "
                "free)"), "rpctui models push PROFILE (or doctor --fix)", fixable=True))
    return out


async def _caches(orch: Orchestrator) -> list[ev.Finding]:
    """Each cache server's folder: the weights there, and room for the ones that are not."""
    servers = [(n, s) for n, s in orch.profile.servers() if s.cache and n.label in orch.hosts]
    if not servers:
        return []
    try:
        plan = await orch.make_plan()
    except (UserError, OSError, ValueError):
        plan = None  # the preflight has said why; the folders' disk is still looked at
    out = []
    for node, server in servers:
        ep = endpoint(node, server)
        try:
            seen = await look(orch, node, server, plan)
        except UserError as exc:
            out.append(_finding("cache", node.label, False, f"{ep}: {exc.message}", exc.fix))
            continue
        folder, weights, have = seen["folder"], seen["weights"], int(seen["present"])
        need, free = int(seen["need_bytes"]), int(seen["free_bytes"])
        if server.cache_limit_gib:
            need = min(need, int(server.cache_limit_gib * 2**30))
        weighed = (f"{have} of {weights} weights" if plan is not None else
                   "the weights not planned (the preflight says why)")
        there = (f"{ep}: {weighed} in {folder} ({int(seen['cache_bytes']) / 2**20:.0f} MiB "
                 f"cached, {free / 2**30:.2f} GiB free)")
        if need > free:
            out.append(_finding("cache", node.label, False, (
                f"{ep}: the model's weights need {need / 2**30:.2f} GiB more in {folder}, "
                f"{free / 2**30:.2f} GiB free"), "free disk there, set cache_limit_gib for this "
                "server, or point LLAMA_CACHE in its env at a disk with room"))
        elif server.cache_fill and have < weights and not server.cache_limit_gib:
            fix = ("rpctui doctor --fix fills it now (a run fills it before its job)"
                   if seen["model"] else "rpctui models push PROFILE puts the model copy there "
                   "to fill it from (doctor --fix does both)")
            out.append(_finding("cache", node.label, False, there + ": not filled", fix,
                                fixable=True))
        else:
            out.append(_finding("cache", node.label, True, there))
    return out


async def _reach(orch: Orchestrator, node: Node) -> ev.Finding:
    """A listener where the node's first server will listen, connected to from the main node."""
    main = orch.profile.main_node
    server = node.servers[0]
    target = endpoint_host(node, server)
    try:
        spawned, port, _ = await listen_agent(orch.hosts[node.label], node, 30)
    except OSError as exc:
        return _finding("reach", node.label, False, f"could not listen on {target}: {exc}")
    try:
        ok = await orch.hosts[main.label].port_open(target, port)
    finally:
        await spawned.close_stdin()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(spawned.wait(), 5)
    if ok:
        return _finding("reach", node.label, True, f"{target}:{port} is reachable from the main "
                        f"node {main.label}")
    return _finding("reach", node.label, False, (
        f"{target}:{port} is not reachable from the main node {main.label} (this machine may "
        "reach it: what matters is the main node)"),
        f"open TCP port {server.port} on {node.label} to {main.label} (a firewall between them?)")


async def _clock(orch: Orchestrator, node: Node) -> ev.Finding:
    host = orch.hosts[node.label]
    before = time.time()
    result = await host.run([node.python, "-S", "-c", "import time; print(repr(time.time()))"])
    after = time.time()
    try:
        offset = float(result.stdout.strip()) - (before + after) / 2
    except ValueError:
        return _finding("clock", node.label, False, "could not read its clock")
    text = f"{offset:+.3f} s against this machine (measured within {after - before:.3f} s)"
    if abs(offset) <= CLOCK_TOLERANCE_S:
        return _finding("clock", node.label, True, text)
    return _finding("clock", node.label, False, text + ": timestamps in records and logs "
                    "will not line up", "run an NTP client there (chrony, systemd-timesyncd)")


async def doctor(orch: Orchestrator, fix: bool = False) -> ExitCode:
    """The preflight, then the doctor's own checks; with ``fix``, build and push first."""
    try:
        if fix:
            await _fix(orch)
        passed = await orch.connect()
        if fix and passed:
            await _fill(orch)
        findings: list[ev.Finding] = []
        findings += await _builds(orch)
        findings += await _disk(orch)
        findings += await _caches(orch)
        main = orch.profile.main_node
        for node in orch.profile.nodes:
            if node.servers and not node.tunnel and node.label != main.label \
                    and node.label in orch.hosts:
                findings.append(await _reach(orch, node))
            if node.label in orch.hosts:
                findings.append(await _clock(orch, node))
        for finding in findings:
            orch.emit(finding)
        failed = not passed or any(not f.ok for f in findings)
        return ExitCode.PREFLIGHT if failed else ExitCode.OK
    finally:
        await asyncio.shield(orch.teardown())


async def _fix(orch: Orchestrator) -> None:
    """What doctor --fix does before it looks: the builds and the model copies."""
    nodes = [n for n in orch.profile.nodes if n.build and not n.is_local]
    if nodes:
        for node in nodes:
            orch.hosts.setdefault(node.label, await orch.connect_node(node))
        orch.emit(ev.Notice(message="doctor --fix: rpctui build for " + ", ".join(
            n.label for n in nodes)))
        await Builder(orch.profile, orch.hosts, orch.emit).run()
    plan = targets(orch.profile)
    if plan:
        for node, _ in plan:
            orch.hosts.setdefault(node.label, await orch.connect_node(node))
        orch.emit(ev.Notice(message="doctor --fix: rpctui models push"))
        await Pusher(orch.profile, orch.hosts, orch.emit).run()


async def _fill(orch: Orchestrator) -> None:
    """doctor --fix, once the preflight passed: the servers with cache_fill started, filled
    from their nodes' model copies, and stopped (the checks then find their ports free)."""
    if not any(s.cache and s.cache_fill for _, s in orch.profile.servers()):
        return
    orch.emit(ev.Notice(message="doctor --fix: filling the tensor caches (the rpc-servers "
                        "start, take the weights from their nodes' model copies, and stop)"))
    try:
        await orch.start()
    except UserError as exc:
        orch.emit(ev.Notice(message=f"doctor --fix: the cache fill failed: {exc.message}"))
    finally:
        await processes.stop_servers(orch)
