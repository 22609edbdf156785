"""The link test: the main node against every node that runs rpc-servers, over a plain TCP
connection to where that node's first server listens (the path RPC takes, not rpctui's SSH
connection). One node at a time, so the tests do not share the main node's link. The agent
(:mod:`rpctui.hosts.agents.linktest`) needs nothing on the nodes but their python3."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from rpctui.hosts.base import Host, LineSplitter, Spawned, agent_argv, agent_source
from rpctui.llama.caps import Capabilities
from rpctui.profile.schema import Node, Profile, endpoint_host
from rpctui.profiler import links as plinks
from rpctui.run import events as ev

_AGENT = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "linktest.py"
LISTEN_TIMEOUT_S = 15.0


def server_nodes(profile: Profile) -> list[Node]:
    """The nodes a link test covers: every node with an rpc-server, in profile order."""
    return [n for n in profile.nodes if n.servers]


async def listen_agent(host: Host, node: Node, limit_s: float) -> tuple[Spawned, int, str]:
    """Start the serving agent on the node; (its process, the port it listens on, a note)."""
    server = node.servers[0]
    source = agent_source(_AGENT, {"role": "serve", "bind": server.bind, "port": server.port,
                                   "limit_s": limit_s})
    spawned = await host.spawn(agent_argv(node.python, source, "rpctui-linktest"), launched=False)
    await spawned.write(source)
    lines = LineSplitter()
    errors = ""

    async def first_line() -> dict[str, object]:
        nonlocal errors
        async for stream, text in spawned.chunks():
            if stream != "stdout":
                errors += text
                continue
            for line in lines.feed(text):
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and "listening" in data:
                        return data
        return {}

    try:
        data = await asyncio.wait_for(first_line(), LISTEN_TIMEOUT_S)
    except TimeoutError:
        data = {}
    if not data:
        await spawned.close_stdin()
        why = errors.strip().splitlines()[-1:] or ["no answer"]
        raise OSError(f"the link-test agent did not start on {node.label}: {why[0]}")
    port = data["listening"]
    assert isinstance(port, int)
    return spawned, port, str(data.get("note", ""))


async def measure_link(profile: Profile, hosts: dict[str, Host], caps: dict[str, Capabilities],
                       node: Node, seconds: float = 2.0, pings: int = 50) -> ev.LinkMeasured:
    """One node's link to the main node; a failure is a LinkMeasured with its note."""
    main = profile.main_node
    server = node.servers[0]
    target = endpoint_host(node, server)
    link = caps[node.label].link if node.label in caps else None
    main_link = caps[main.label].link if main.label in caps else None
    if node.label == main.label:
        # The main node's own servers: RPC goes over loopback (or its own address).
        link = main_link
    try:
        spawned, port, note = await listen_agent(hosts[node.label], node, seconds * 2 + 60)
    except OSError as exc:
        return plinks.measured(node.label, main.label, f"{target}:{server.port}", {}, seconds,
                               link, main_link, note=str(exc))
    try:
        source = agent_source(_AGENT, {"role": "client", "host": target, "port": port,
                                       "seconds": seconds, "pings": pings})
        result = await hosts[main.label].run([main.python, "-S", "-"], input=source,
                                             timeout=seconds * 2 + 60)
        try:
            raw = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raw = {"error": (result.stderr.strip().splitlines() or [f"exit {result.rc}"])[-1]}
    finally:
        await spawned.close_stdin()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(spawned.wait(), 5)
    return plinks.measured(node.label, main.label, f"{target}:{port}", raw, seconds, link,
                           main_link, note=note)


async def measure_links(profile: Profile, hosts: dict[str, Host], caps: dict[str, Capabilities],
                        emit: Callable[[ev.Event], None], seconds: float = 2.0,
                        pings: int = 50) -> list[ev.LinkMeasured]:
    """Every server node's link, one after another; then which of them fall short."""
    results: list[ev.LinkMeasured] = []
    for node in server_nodes(profile):
        if node.tunnel:  # its servers face loopback only: a test port would face the network
            emit(ev.Notice(node=node.label, message=f"link test: {node.label} is reached "
                           f"through SSH (transport \"ssh\"); its link is not tested"))
            continue
        measured = await measure_link(profile, hosts, caps, node, seconds, pings)
        emit(measured)
        results.append(measured)
    emit(ev.LinksAssessed(flags=tuple(plinks.assess(results))))
    return results
