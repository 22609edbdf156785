"""Probing a node: the probe agent's script and argv, and what earlier probes learnt about the
node's binaries (kept per node, keyed by each binary's fingerprint). The agent's raw answer
becomes Capabilities in :mod:`rpctui.llama.caps`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import Host, agent_source
from rpctui.llama.caps import TOOL_NAMES, Capabilities, capabilities_from_probe
from rpctui.paths import cache_dir
from rpctui.profile.schema import Node, Profile, endpoint_host

_AGENT = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "probe.py"


_CACHED_KEYS = ("help", "version", "banner", "devices")


def probe_cache_path(node: Node) -> Path:
    """Where what was learnt about a node's binaries is kept between runs."""
    ident = f"{node.host}\0{node.user or ''}\0{node.ssh_port or ''}"
    return cache_dir() / "probes" / (hashlib.sha256(ident.encode()).hexdigest()[:16] + ".json")


def _needed(role: str, banner: bool) -> tuple[str, ...]:
    if role == "server":
        return ("help", "devices", "banner") if banner else ("help", "devices")
    return ("help", "version")


def load_probe_cache(node: Node) -> dict[str, Any]:
    """{binary path: {fingerprint, help, version, banner}} from earlier probes of this node."""
    try:
        cached: dict[str, Any] = json.loads(probe_cache_path(node).read_text())
        return cached
    except (OSError, ValueError):
        return {}


def merge_probe_cache(raw: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    """Fill in what the agent skipped because the binary is unchanged since it was cached."""
    for info in raw.get("binaries", {}).values():
        entry = cache.get(info["path"])
        if info.get("cached") and entry:
            for key in _CACHED_KEYS:
                if key in entry:
                    info[key] = entry[key]
    return raw


def save_probe_cache(node: Node, raw: dict[str, Any]) -> None:
    """Remember what the agent ran; nothing is written when every binary came from the cache."""
    if all(info.get("cached") for info in raw.get("binaries", {}).values()):
        return
    entries = {info["path"]: {"fingerprint": info["fingerprint"], "role": role,
                              **{k: info[k] for k in _CACHED_KEYS if k in info}}
               for role, info in raw.get("binaries", {}).items() if "fingerprint" in info}
    path = probe_cache_path(node)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries))
        tmp.replace(path)
    except OSError:
        pass


def probe_script(node: Node, ports: list[tuple[str, int]], model: str | None,
                 bin_dirs: list[str], is_main: bool, banner: bool = True,
                 cache: dict[str, Any] | None = None, peer: str | None = None) -> bytes:
    """The agent's source with its CONFIG filled in, ready to send to ``python3 -``.

    ``cache`` (from :func:`load_probe_cache`) lets the agent skip --help, --version and the
    banner of binaries that have not changed since; device lists are always read afresh.
    """
    cache = cache or {}
    # Client tools are probed on every node: their --version names the build.
    names = {role: names for role, names in TOOL_NAMES.items()
             if role != "server" or node.servers}
    config = {
        "bin_dirs": bin_dirs, "use_path": not bin_dirs, "names": names, "ports": ports,
        "model": model, "banner": banner and bool(node.servers), "env": node.env,
        "peer": peer,
        "list_devices_role": "bench" if is_main else None,
        "known": {path: e["fingerprint"] for path, e in cache.items()
                  if all(k in e for k in _needed(e.get("role", ""), banner))},
        "list_devices": {path: "--list-devices" in e.get("help", {}).get("output", "")
                         for path, e in cache.items()},
    }
    return agent_source(_AGENT, config)


def probe_argv(node: Node) -> list[str]:
    # -S: the agent needs only the standard library; skipping site saves start-up time.
    return [node.python, "-S", "-"]


def link_peer(profile: Profile, node: Node) -> str | None:
    """An address whose route shows the link a node's RPC traffic takes: a worker's own server
    address (when it binds one), else the main node's; for the main node, its first server's
    or the first worker's. None when it is not known (a local main node seen from a remote)."""
    own = [s.bind for s in node.servers if s.bind not in ("0.0.0.0", "::")]
    if own:
        return own[0]
    if not node.main:
        main = profile.main_node
        if main.address:
            return main.address
        return None if main.is_local and not node.is_local else (
            "127.0.0.1" if main.is_local else main.host)
    others = [(n, s) for n, s in profile.servers()]
    return endpoint_host(*others[0]) if others else None


async def probe_node(node: Node, host: Host, bin_dirs: list[str], model: str | None,
                     peer: str | None = None) -> Capabilities:
    """Run the probe agent on a node (what earlier probes learnt is reused) and read its answer;
    ``peer``: see :func:`link_peer`."""
    ports = [(s.bind, s.port) for s in node.servers]
    cache = load_probe_cache(node)
    script = probe_script(node, ports, model, bin_dirs, node.main, cache=cache, peer=peer)
    result = await host.run(probe_argv(node), input=script, timeout=120)
    if result.rc != 0:
        if result.rc == 127 or "not found" in result.stderr:
            raise UserError(f"node {node.label}: {node.python} not found",
                            "install python3 on the node, or set python = \"/path/to/python3\" "
                            "for it in the profile", ExitCode.PREFLIGHT)
        raise UserError(f"node {node.label}: probing failed (exit {result.rc}): "
                        f"{result.stderr.strip()[-500:]}", "run with --debug for details",
                        ExitCode.PREFLIGHT)
    raw = merge_probe_cache(json.loads(result.stdout), cache)
    save_probe_cache(node, raw)
    return capabilities_from_probe(node.label, raw)
