"""Warm tensor caches: fill each `cache_fill` server's cache from the model copy on its node.

An rpc-server started with -c keeps every weight tensor above llama.cpp's 10 MiB threshold a
client sends it in a file named by the data's FNV-1a hash; a later client sends the hash and
the weights stay where they are. The first load still sends everything over the network.
Here, before the job, the cache-fill agent (hosts/agents/cachefill.py) on the server's node
sends the server, over that node's loopback, exactly the tensors the planner says the client
will send it, from the node's own copy of the model: the server writes the files itself, so
their names and contents are its own. The first load then finds them (see docs/PERFORMANCE.md
for what it saves). Servers with cache_limit_gib are pruned to it first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import agent_argv, agent_source, json_lines
from rpctui.llama import argv as largv
from rpctui.plan.gguf import shards
from rpctui.profile.schema import Node, Server, endpoint
from rpctui.run import events as ev

if TYPE_CHECKING:
    from rpctui.engine.sampling import Sampler
    from rpctui.engine.servers import ServerWatch
    from rpctui.hosts.base import Host
    from rpctui.llama.caps import Capabilities
    from rpctui.plan.plan import Plan
    from rpctui.profile.schema import Job as JobSettings
    from rpctui.profile.schema import Profile


class Engine(Protocol):
    """What the fill uses of the engine that runs it (the Orchestrator is one)."""

    @property
    def profile(self) -> Profile: ...
    @property
    def hosts(self) -> Mapping[str, Host]: ...
    @property
    def caps(self) -> Mapping[str, Capabilities]: ...
    @property
    def watches(self) -> Mapping[str, ServerWatch]: ...
    @property
    def model(self) -> str: ...
    @property
    def samplers(self) -> Mapping[str, Sampler]: ...

    def emit(self, event: ev.Event) -> None: ...
    async def make_plan(self, experts_on: list[str] | None = None) -> Plan: ...
    async def plan_for(self, job: JobSettings) -> Plan | None: ...

_AGENT = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "cachefill.py"
#: llama.cpp sends a tensor's hash first only above this size (HASH_THRESHOLD, every flavour)
HASH_THRESHOLD = 10 * 1024 * 1024
BANNER_WAIT_S = 5.0


async def fill_caches(orch: Engine) -> None:
    """Fill (and prune) every server that asks for it: folders in parallel, the servers that
    share one (the same node's, by default) one after the other."""
    wanted = [(n, s) for n, s in orch.profile.servers()
              if s.cache and (s.cache_fill or s.cache_limit_gib)]
    if not wanted:
        return
    plan = await orch.make_plan() if any(s.cache_fill for _, s in wanted) else None
    files = [str(p) for p in shards(orch.model)]

    async def fill(members: list[tuple[Node, Server]]) -> None:
        for node, server in members:
            tensors = (_sends(orch, plan, node, server, files)
                       if plan is not None and server.cache_fill else [])
            await _fill(orch, node, server, tensors)

    await asyncio.gather(*(fill(members) for members in (await _folders(orch, wanted)).values()))
    # A reading now: the fill's bytes (the node's loopback, the server's port) stay out of
    # the load that the job's first reading starts counting from.
    await asyncio.gather(*(sampler.fresh_reading() for sampler in orch.samplers.values()))


def _cached(orch: Engine, plan: Plan, node: Node, server: Server) -> list[Any]:
    """The planned tensors the client sends this server by hash first (above the threshold)."""
    main = orch.caps[orch.profile.main_node.label]
    ep = endpoint(node, server)
    names = [largv.rpc_buffer(main, ep, i) for i in range(max(1, len(server.devices)))]
    return [t for name in names for t in plan.placement.tensors.get(name, [])
            if t.n_bytes > HASH_THRESHOLD]


def _sends(orch: Engine, plan: Plan, node: Node, server: Server,
           files: list[str]) -> list[list[Any]]:
    """Those tensors as the agent reads them from the node's copy (``files``: the model's
    shards): [name, file, offset, size]."""
    return [[t.name, files[t.shard], t.data_start + t.offset, t.n_bytes]
            for t in _cached(orch, plan, node, server)]


async def _cache_dir(orch: Engine, node: Node, server: Server) -> str:
    """The server's cache folder, as its banner says."""
    ep = endpoint(node, server)
    watch = orch.watches[ep]
    for _ in range(int(BANNER_WAIT_S / 0.05)):
        if watch.cache_dir:
            return watch.cache_dir
        await asyncio.sleep(0.05)
    raise UserError(f"server {ep} on {node.label} did not say where its tensor cache is",
                    "check that this build's rpc-server has -c (cache = true)", ExitCode.FAILED)


async def _folders(orch: Engine, servers: list[tuple[Node, Server]]
                   ) -> dict[tuple[str, str], list[tuple[Node, Server]]]:
    """The servers by cache folder: (node, folder) -> the servers writing there."""
    out: dict[tuple[str, str], list[tuple[Node, Server]]] = {}
    for node, server in servers:
        out.setdefault((node.label, await _cache_dir(orch, node, server)), []).append(
            (node, server))
    return out


def _cache_servers(orch: Engine) -> list[tuple[Node, Server]]:
    return [(n, s) for n, s in orch.profile.servers()
            if s.cache and endpoint(n, s) in orch.watches]


async def cache_marks(orch: Engine) -> dict[tuple[str, str], int]:
    """Before a job: each cache folder's node clock (files newer than it are the load's). A
    folder that cannot be read gets no mark, and so no report: the job runs all the same."""
    folders = await _folders(orch, _cache_servers(orch))
    marks = await asyncio.gather(*(_agent(orch, *members[0], {"mark": True})
                                   for members in folders.values()), return_exceptions=True)
    out = {}
    for (key, members), mark in zip(folders.items(), marks, strict=True):
        if isinstance(mark, UserError):
            orch.emit(ev.Notice(node=members[0][0].label, message=f"no cache report: {mark}"))
        elif isinstance(mark, BaseException):
            raise mark
        else:
            out[key] = int(mark["now_ns"])
    return out


async def after_job(orch: Engine, marks: Mapping[tuple[str, str], int],
                    job: JobSettings | None) -> None:
    """After a job: how much of each cache folder's load came from it (the weights its
    servers did not have to receive, against the plan for ``job``, the step's settings; None
    where no plan describes the step), and each limited cache brought back within its
    cache_limit_gib (the load cached what the fill left out)."""
    folders = await _folders(orch, _cache_servers(orch))
    if not folders:
        return
    plan = await orch.plan_for(job) if job is not None else None

    async def report(key: tuple[str, str], members: list[tuple[Node, Server]]) -> None:
        first = None
        for node, server in members:  # one at a time: they share the folder
            try:
                result = await _fill(orch, node, server, [], after_job=True,
                                     since=marks.get(key) if first is None else None)
            except UserError as exc:  # a node lost with the job: its failure says more
                orch.emit(ev.Notice(node=node.label, message=f"no cache report: {exc}"))
                return
            first = first or result
        if first is None or key not in marks:
            return
        weights = ([t.n_bytes for n, s in members for t in _cached(orch, plan, n, s)]
                   if plan is not None else None)
        orch.emit(_used(members[0][0], tuple(endpoint(n, s) for n, s in members), first,
                        weights))

    await asyncio.gather(*(report(key, members) for key, members in folders.items()))


async def _agent(orch: Engine, node: Node, server: Server,
                 config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the cache agent for this server's folder (as its banner named it); its last
    answer."""
    return await _run_agent(orch, node, server,
                            {"cache_dir": await _cache_dir(orch, node, server), **config})


async def _run_agent(orch: Engine, node: Node, server: Server,
                     config: Mapping[str, Any]) -> dict[str, Any]:
    ep = endpoint(node, server)
    host = orch.hosts[node.label]
    source = agent_source(_AGENT, config)
    try:
        spawned = await host.spawn(agent_argv(node.python, source, "rpctui-cachefill"),
                                   launched=False)
        await spawned.write(source)
    except OSError as exc:
        raise UserError(f"the tensor cache of {ep} on {node.label}: {exc}",
                        f"check the connection to {node.label}", ExitCode.FAILED) from None
    result: dict[str, Any] = {}

    def keep(data: dict[str, Any]) -> None:
        if "filled" in data or "error" in data or "now_ns" in data or "folder" in data:
            result.update(data)

    errors = await json_lines(spawned, keep)
    if "error" in result or not result:
        why = result.get("error") or (errors.strip().splitlines() or ["no answer"])[-1]
        raise UserError(f"the tensor cache of {ep} on {node.label}: {why}",
                        f"check that job.model ({orch.model}) is on {node.label} (rpctui models "
                        "push puts it there) and that the cache folder has room", ExitCode.FAILED)
    return result


async def look(orch: Engine, node: Node, server: Server, plan: Plan | None) -> dict[str, Any]:
    """With no server running (rpctui doctor): the server's cache folder, as llama.cpp picks
    it from the environment the server gets; how many of the weights the client would send it
    by hash are there already (for cache_fill: filled); the bytes and the free disk for the
    rest; whether the node has the model copy a fill reads."""
    tensors = (_sends(orch, plan, node, server, [str(p) for p in shards(orch.model)])
               if plan is not None else [])
    env = {**node.env, **server.env}
    result = await _run_agent(orch, node, server, {
        "look": True, "cache_dir": "", "tensors": tensors,
        "env": {k: env[k] for k in ("LLAMA_CACHE", "XDG_CACHE_HOME", "HOME") if k in env}})
    result["weights"] = len(tensors)
    return result


async def _fill(orch: Engine, node: Node, server: Server, tensors: list[list[Any]],
                after_job: bool = False, since: int | None = None) -> dict[str, Any]:
    ep = endpoint(node, server)
    protocol = orch.caps[node.label].protocol or "0"
    major = int(protocol.split(".")[0]) if protocol.split(".")[0].isdigit() else 0
    if tensors and major not in (2, 3, 7):
        raise UserError(f"server {ep} on {node.label} speaks RPC protocol {protocol}, which "
                        "rpctui's cache fill does not know", "remove cache_fill for it, or use "
                        "a flavour rpctui builds (mainline, b6110, ik)", ExitCode.USAGE)
    address = "127.0.0.1" if server.bind == "0.0.0.0" else server.bind
    result = await _agent(orch, node, server, {
        "tensors": tensors, "host": address, "port": server.port, "protocol": major,
        "limit": int(server.cache_limit_gib * 2**30) if server.cache_limit_gib else None,
        "since_ns": since})
    if after_job and not server.cache_limit_gib:
        return result
    unnamed = result.get("unnamed") or []
    note = (f"; {len(unnamed)} tensors were sent but no cache file appeared for them"
            if unnamed else "")
    if result.get("over_limit"):
        note += (f"; {result['over_limit']} tensors left out to stay within "
                 f"cache_limit_gib = {server.cache_limit_gib:g} (the load sends them)")
    orch.emit(ev.CacheFilled(node=node.label, endpoint=ep, tensors=len(tensors),
                             present=int(result["present"]), filled=int(result["filled"]),
                             bytes=int(result["bytes"]), seconds=float(result["seconds"]),
                             cache_bytes=int(result["cache_bytes"]),
                             pruned_bytes=int(result.get("pruned_bytes") or 0),
                             message=("after the job: " if after_job else "")
                             + f"cache {orch.watches[ep].cache_dir}{note}"))
    return result


def _used(node: Node, eps: tuple[str, ...], result: Mapping[str, Any],
          weights: list[int] | None) -> ev.CacheUsed:
    """What a load found in a cache folder: each weight it was to send by hash that it had
    to send whole left a file of its size; files of other sizes are not weights (b6110 and ik
    also cache activations above the threshold)."""
    written = [int(size) for size in result.get("written") or []]
    if weights is None:
        return ev.CacheUsed(node=node.label, endpoints=eps, weights=-1, found=-1,
                            written=len(written), written_bytes=sum(written),
                            cache_bytes=int(result["cache_bytes"]))
    pending = sorted(weights)
    missed = 0
    for size in written:
        if size in pending:
            pending.remove(size)
            missed += 1
    return ev.CacheUsed(node=node.label, endpoints=eps, weights=len(weights),
                        found=len(weights) - missed, written=len(written),
                        written_bytes=sum(written), cache_bytes=int(result["cache_bytes"]))
