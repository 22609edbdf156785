"""Preflight: everything that can be known wrong before anything starts (pure).

Input: the profile and each node's probed Capabilities. Output: PreflightIssue
events, fatal or not, each naming the node and the fix. The orchestrator
refuses to launch while any fatal issue stands.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rpctui.errors import UserError
from rpctui.llama import argv as largv
from rpctui.llama.caps import Capabilities
from rpctui.profile.schema import Profile, endpoint
from rpctui.run import events as ev

#: ggml-backend.cpp's GGML_SCHED_MAX_BACKENDS, the same in all three flavours (16)
SCHED_MAX_BACKENDS = 16


def _issue(node: str, check: str, message: str, fix: str = "", fatal: bool = True) -> ev.PreflightIssue:
    return ev.PreflightIssue(node=node, check=check, message=message, fix=fix, fatal=fatal)


def check_builds(profile: Profile, caps: dict[str, Capabilities]) -> list[ev.PreflightIssue]:
    """Every node must run the same build and RPC protocol (seed 000: use the same build)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for node in profile.nodes:
        c = caps.get(node.label)
        if c is None:
            continue
        seen[node.label] = (c.flavour, c.build if c.build != "unknown" else "",
                            c.protocol or "")
    flavours = {v[0] for v in seen.values() if v[0] != "unknown"}
    builds = {v[1] for v in seen.values() if v[1]}
    protocols = {v[2] for v in seen.values() if v[2]}
    if len(flavours) <= 1 and len(builds) <= 1 and len(protocols) <= 1:
        return []
    detail = "; ".join(f"{name}: {fl} build {b or '?'}, RPC protocol {p or '?'}"
                       for name, (fl, b, p) in seen.items())
    allowed = profile.allow_mixed_builds
    return [_issue("", "builds", f"nodes run different llama.cpp builds ({detail})",
                   "use the same llama.cpp build on every node; mixed builds crash each other "
                   "(or set allow_mixed_builds = true to try anyway)", fatal=not allowed)]


def check_node(profile: Profile, c: Capabilities) -> list[ev.PreflightIssue]:
    node = next(n for n in profile.nodes if n.label == c.node)
    issues: list[ev.PreflightIssue] = []
    built = node.build and not node.is_local
    where = (f"in {node.bin_dir}" if node.bin_dir else f"in its {node.build} build" if built
             else "on PATH")
    if node.servers and c.server is None:
        issues.append(_issue(node.label, "binary", f"no rpc-server or ggml-rpc-server {where} "
                             f"on node {node.label}",
                             f"rpctui build PROFILE builds {node.build} there" if built else
                             "set bin_dir for this node to a llama.cpp build with GGML_RPC=ON"))
    port_info = {(p["bind"], p["port"]): p for p in c.raw.get("ports", [])}
    names = {d.name for d in c.devices}
    for server in node.servers:
        p = port_info.get((server.bind, server.port))
        if p and not p["free"]:
            if "assign" in (p.get("error") or "").lower():
                issues.append(_issue(node.label, "port", f"{server.bind} is not an address of node "
                                     f"{node.label}", "set bind to one of the node's addresses, "
                                     "or 127.0.0.1"))
            elif (owner := p.get("owner") or {}).get("rpctui"):
                issues.append(_issue(node.label, "port", f"port {server.port} on node {node.label} "
                                     f"is held by an rpc-server of another rpctui "
                                     f"({owner['rpctui']}; server pid {owner['pid']}): two "
                                     f"rpctui on one cluster would fight over its servers",
                                     "let that run end, or end it (Ctrl-C there, or kill its "
                                     "pid), or give this profile other ports"))
            elif owner and "rpc-server" in owner["command"] and owner.get("clients"):
                issues.append(_issue(node.label, "port", f"port {server.port} on node {node.label} "
                                     f"is held by an rpc-server rpctui did not start "
                                     f"({owner['command']}, pid {owner['pid']}), serving a client "
                                     f"at {', '.join(owner['clients'])} now (an rpc-server takes "
                                     f"one client at a time)",
                                     "let that client's job end, or end that server (kill "
                                     f"{owner['pid']} on {node.label}), or give this profile "
                                     "other ports"))
            else:
                held = (f"by {owner['command']} (pid {owner['pid']})" if owner else
                        f"({p.get('error') or 'taken'})")
                issues.append(_issue(node.label, "port", f"port {server.port} on node {node.label} "
                                     f"is already in use {held}",
                                     "stop what listens there (an orphaned rpc-server?) or choose "
                                     "another port"))
        if node.tunnel:
            pass  # bound to 127.0.0.1 there, reached through SSH: nothing faces the network
        elif server.bind == "127.0.0.1" and not node.main:
            issues.append(_issue(node.label, "bind", f"server {endpoint(node, server)} on node "
                                 f"{node.label} binds 127.0.0.1, which the main node "
                                 f"{profile.main_node.label} cannot reach",
                                 "set bind to this node's address on the network the main node "
                                 "uses (the RPC protocol has no authentication: use a private "
                                 "network), or transport = \"ssh\" with this machine as the "
                                 "main node"))
        elif server.bind != "127.0.0.1":
            issues.append(_issue(node.label, "exposed", f"server {endpoint(node, server)} accepts "
                                 f"unauthenticated connections from any host that reaches "
                                 f"{server.bind}{_reach(server.bind, c.raw.get('networks'))}",
                                 "keep this network private or firewalled, or use transport = "
                                 "\"ssh\"", fatal=False))
        for dev in server.devices:
            if names and dev not in names and c.server is not None:
                issues.append(_issue(node.label, "device", f"node {node.label} has no device "
                                     f"{dev!r}; it has: {', '.join(sorted(names))}",
                                     "fix devices for this server"))
        if c.server is not None:
            try:
                _, notes = largv.server_argv(c, node, server)
            except UserError as exc:
                issues.append(_issue(node.label, "flags", exc.message, exc.fix))
            else:
                issues += [_issue(node.label, "flags", n, fatal=False) for n in notes]
    return issues


def check_main(profile: Profile, c: Capabilities, model: str) -> list[ev.PreflightIssue]:
    node = profile.main_node
    job = profile.job
    issues: list[ev.PreflightIssue] = []
    info: dict[str, Any] = c.raw.get("model") or {}
    if not info.get("exists"):
        issues.append(_issue(node.label, "model", f"model {model} not found on main node "
                             f"{node.label}", "fix job.model (a path on the main node), or copy "
                             "the model there (job.model_source and rpctui models push)"))
    elif info.get("magic") != "GGUF":
        issues.append(_issue(node.label, "model", f"{model} on {node.label} is not a GGUF file",
                             "point job.model at a .gguf file (the first shard of a split model)"))
    servers = profile.servers()
    eps = [endpoint(n, s) for n, s in servers]
    names = {f"{n.label}:{s.port}": endpoint(n, s) for n, s in servers}
    try:
        largv.job_argv(c, job, model, eps, names)
    except UserError as exc:
        issues.append(_issue(node.label, "flags", exc.message, exc.fix))
    rpc = sum(max(len(s.devices), 1) for _, s in servers)
    backends = rpc + len(c.client_devices) + 1
    if backends > SCHED_MAX_BACKENDS:
        issues.append(_issue(node.label, "backends", f"the job would use {backends} backends "
                             f"({rpc} RPC devices, {len(c.client_devices)} local GPUs and the CPU); "
                             f"llama.cpp's scheduler takes at most {SCHED_MAX_BACKENDS} "
                             f"(GGML_SCHED_MAX_BACKENDS) and aborts otherwise",
                             f"use at most {SCHED_MAX_BACKENDS - 1 - len(c.client_devices)} "
                             f"servers, or give each server more devices (-d) instead of more "
                             f"servers"))
    if job.tensor_split and not profile.sweep:
        local = len(c.client_devices)
        # ik_llama.cpp's split also has a slot for the CPU of a CPU-only build
        slots = rpc + max(local, 1) if c.flavour == "ik" else rpc + local
        if len(job.tensor_split) not in (rpc, slots):
            issues.append(_issue(node.label, "split", f"tensor_split has "
                                 f"{len(job.tensor_split)} entries; the job sees {rpc} server "
                                 f"devices and {local} local GPUs on {node.label}",
                                 f"give {slots} fractions: servers in profile order, then "
                                 f"the main node's {'GPUs' if local else 'CPU'}"))
    return issues


def preflight(profile: Profile, caps: dict[str, Capabilities], model: str) -> list[ev.PreflightIssue]:
    issues = check_builds(profile, caps)
    for c in caps.values():
        issues += check_node(profile, c)
    main = caps.get(profile.main_node.label)
    if main is not None:
        issues += check_main(profile, main, model)
    return issues


def _reach(bind: str, networks: list[list[Any]] | None) -> str:
    """Who can reach a port bound to ``bind``: the networks of the node's interfaces it is on
    (every one of them for 0.0.0.0), as the probe listed them."""
    if not networks:
        return ""
    nets = []
    for name, address, prefix in networks:
        if name == "lo" or (bind != "0.0.0.0" and address != bind):
            continue
        net = ipaddress.ip_interface(f"{address}/{prefix}").network
        nets.append(f"{net} ({name})")
    return f": every host on {', '.join(nets)}" if nets else ""

