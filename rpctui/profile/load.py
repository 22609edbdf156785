"""Strict loading and comment-keeping saving of profile TOML files.

Unknown keys (with a did-you-mean), wrong types, bad ranges and cross-field
mistakes each become one line naming file, line and key; all of them are
reported together as a :class:`ProfileError` (exit code 2). Saving edits a
``tomlkit`` document in place, so the user's comments and key order survive.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from rpctui.errors import ExitCode, UserError
from rpctui.profile.schema import (
    FIXED_JOB_KEYS,
    FIXED_SERVER_KEYS,
    Job,
    Node,
    Profile,
    Server,
    Sweep,
    SweepStep,
    TensorOverride,
)
from rpctui.profile.tomlpos import Path as KeyPath
from rpctui.profile.tomlpos import key_lines, line_of


@dataclasses.dataclass(frozen=True)
class Problem:
    path: KeyPath
    message: str


class ProfileError(UserError):
    """One or more problems in a profile file; each line names file, line and key."""

    def __init__(self, file: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.problems = problems
        lines = [f"{file}:{line or 1}: {key}: {msg}" if key else f"{file}:{line or 1}: {msg}"
                 for line, key, msg in problems]
        super().__init__("\n".join(lines), "", ExitCode.USAGE)


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    if origin is dict:
        return "a table of strings"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _convert(value: Any, hint: Any, path: KeyPath, problems: list[Problem]) -> Any:
    """Check ``value`` against a type hint; return the converted value or None on a problem."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, inner, path, problems)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            problems.append(Problem(path, f"must be {_type_name(hint)}"))
            return None
        return _build(hint, value, path, problems)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(Problem(path, f"must be {_type_name(hint)}"))
            return None
        return [_convert(v, inner, path + (i,), problems) for i, v in enumerate(value)]
    if origin is dict and typing.get_args(hint)[1] is not str:
        if not isinstance(value, dict):  # a sweep's settings: checked as the settings they are
            problems.append(Problem(path, "must be a table"))
            return None
        return dict(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            problems.append(Problem(path, "must be a table of strings, e.g. { NAME = \"value\" }"))
            return None
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        problems.append(Problem(path, f"must be {_type_name(hint)}, not {value!r}"))
        return None
    return float(value) if hint is float else value


def _build(cls: Any, raw: dict[str, Any], path: KeyPath, problems: list[Problem]) -> Any:
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    before = len(problems)
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(Problem(path + (key,), f"unknown key{hint}; known keys: "
                                    f"{', '.join(known)}"))
            continue
        mark = len(problems)
        converted = _convert(value, hints[key], path + (key,), problems)
        check = known[key].metadata.get("check")
        # A value with problems of its own (a list with an item of the wrong type) is not
        # checked further: its check would meet the None that stands for that item.
        if converted is not None and check is not None and len(problems) == mark:
            message = check(converted)
            if message:
                problems.append(Problem(path + (key,), message))
        values[key] = converted
    for name, f in known.items():
        if f.metadata.get("required") and name not in raw:
            problems.append(Problem(path + (name,), "is required"))
    if len(problems) > before:
        return None
    return cls(**values)


def _cross_checks(profile: Profile) -> list[Problem]:
    """Rules that span fields: one main node, unique names and ports, split length, sweep."""
    problems: list[Problem] = []
    nodes = profile.nodes
    if not nodes:
        problems.append(Problem(("nodes",), "the profile needs at least one [[nodes]] table"))
        return problems
    mains = [i for i, n in enumerate(nodes) if n.main]
    if len(mains) > 1:
        first = nodes[mains[0]].label
        problems.append(Problem(("nodes", mains[1], "main"),
                                f"two main nodes ({first} and {nodes[mains[1]].label}); "
                                f"set main = true on one only"))
    names: dict[str, int] = {}
    endpoints: dict[tuple[str, int], tuple[int, int]] = {}
    for i, node in enumerate(nodes):
        if node.label in names:
            problems.append(Problem(("nodes", i, "name" if node.name else "host"),
                                    f"node name {node.label!r} is used twice; give each node "
                                    f"a distinct name"))
        names.setdefault(node.label, i)
        if node.build and node.bin_dir:
            problems.append(Problem(("nodes", i, "build"), "set build or bin_dir, not both"))
        for j, server in enumerate(node.servers):
            at = (node.host, server.port)
            if at in endpoints:
                pi, pj = endpoints[at]
                problems.append(Problem(("nodes", i, "servers", j, "port"),
                                        f"port {server.port} on {node.label} is already used by "
                                        f"nodes[{pi}].servers[{pj}]; give each server its own port"))
            endpoints.setdefault(at, (i, j))
    if not mains and len(nodes) > 1:
        problems.append(Problem(("nodes",), "no node has main = true; mark the node that runs "
                                "the job"))
    servers = profile.servers()
    job = profile.job
    rpc_devices = sum(max(len(s.devices), 1) for _, s in servers)
    if job.tensor_split:
        if profile.sweep and profile.sweep.servers:
            problems.append(Problem(("job", "tensor_split"), "a sweep changes the number of "
                                    "servers, so one tensor_split cannot fit every step; remove "
                                    "one of them"))
        elif len(job.tensor_split) < rpc_devices:
            problems.append(Problem(("job", "tensor_split"),
                                    f"has {len(job.tensor_split)} entries but the servers have "
                                    f"{rpc_devices} devices; give one fraction per device "
                                    f"(servers in profile order, then the main node's GPUs)"))
        if any(x < 0 for x in job.tensor_split) or not any(x > 0 for x in job.tensor_split):
            problems.append(Problem(("job", "tensor_split"), "fractions must be 0 or more, and "
                                    "at least one above 0"))
    known_endpoints = {f"{n.label}:{s.port}" for n, s in servers}
    for k, rule in enumerate(job.override_tensors):
        path: KeyPath = ("job", "override_tensors", k)
        if (rule.buffer is None) == (rule.server is None):
            problems.append(Problem(path, "give exactly one of buffer or server"))
        elif rule.server and rule.server not in known_endpoints:
            close = difflib.get_close_matches(rule.server, known_endpoints, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(Problem(path + ("server",), f"no server {rule.server!r} in this "
                                    f"profile{hint}; write node:port"))
    if profile.sweep and not (profile.sweep.servers or profile.sweep.job or profile.sweep.server
                              or profile.sweep.variants):
        problems.append(Problem(("sweep",), "is empty: give server counts (servers), a grid "
                                "(job, server) or variants"))
    if profile.sweep:
        over = [n for n in profile.sweep.servers if n > len(servers)]
        if over:
            problems.append(Problem(("sweep", "servers"), f"asks for {max(over)} servers but the "
                                    f"profile has {len(servers)}"))
    if job.kind != "bench" and profile.sweep:
        problems.append(Problem(("sweep",), "a sweep needs job.kind = \"bench\""))
    return problems


def _label(changes: dict[str, Any], server: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        if isinstance(v, list):
            return "/".join(show(x) for x in v)
        return str(v)
    parts = [f"{k}={show(v)}" for k, v in changes.items()]
    parts += [f"server.{k}={show(v)}" for k, v in server.items()]
    return " ".join(parts)


def _grid(table: dict[str, Any], path: KeyPath, problems: list[Problem]) -> list[dict[str, Any]]:
    """Every combination of a grid table's value lists, in the order written."""
    combos: list[dict[str, Any]] = [{}]
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            problems.append(Problem(path + (key,), "must be a list of values to try, e.g. "
                                    "[512, 2048]"))
            continue
        combos = [{**c, key: v} for c in combos for v in values]
    return combos


def _resolve_sweep(profile: Profile, raw: dict[str, Any], problems: list[Problem]) -> Profile:
    """The sweep's setups, each checked as a whole profile would be: its job built from the
    profile's [job] with the changes over it, every server with the server changes."""
    sweep = profile.sweep
    if sweep is None:
        return profile
    if (sweep.job or sweep.server) and sweep.variants:
        problems.append(Problem(("sweep", "variants"), "give a grid (sweep.job, sweep.server) or "
                                "variants, not both"))
        return profile
    wanted: list[tuple[str, dict[str, Any], dict[str, Any], KeyPath]] = []
    if sweep.variants:
        for i, v in enumerate(sweep.variants):
            wanted.append((v.name, v.job, v.servers, ("sweep", "variants", i)))
    else:
        # Server settings outermost: the servers restart only when theirs change.
        for s in _grid(sweep.server, ("sweep", "server"), problems):
            for j in _grid(sweep.job, ("sweep", "job"), problems):
                wanted.append(("", j, s, ("sweep",)))
    steps: list[SweepStep] = []
    raw_job = raw.get("job") if isinstance(raw.get("job"), dict) else {}
    for name, changes, server_changes, path in wanted:
        before = len(problems)
        job_path = path + ("job",)
        srv_path = path + ("servers",) if sweep.variants else path + ("server",)
        for key in changes:
            if key in FIXED_JOB_KEYS:
                problems.append(Problem(job_path + (key,), f"a sweep cannot change job.{key} "
                                        f"(one per run): make a profile for each"))
        for key in server_changes:
            if key in FIXED_SERVER_KEYS:
                problems.append(Problem(srv_path + (key,), f"a sweep cannot change a server's "
                                        f"{key}: the --rpc list stays the same at every step"))
        if len(problems) > before:
            continue
        job = _build(Job, {**(raw_job or {}), **changes}, job_path, problems)
        server = _build(Server, dict(server_changes), srv_path, problems) if server_changes \
            else None
        if job is None or (server_changes and server is None):
            continue
        converted = {k: getattr(server, k) for k in server_changes}
        variant = dataclasses.replace(
            profile, job=job, sweep=None,
            nodes=[dataclasses.replace(n, servers=[dataclasses.replace(s, **converted)
                                                   for s in n.servers]) for n in profile.nodes])
        for p in _cross_checks(variant):
            problems.append(Problem(path, f"the setup {name or _label(changes, server_changes)!r}"
                                    f": {dotted(p.path)} {p.message}"))
        steps.append(SweepStep(name or _label(changes, server_changes), job, converted))
    if not wanted:
        steps.append(SweepStep("", profile.job, {}))
    # A grid repeats a bad value's problem in every combination that holds it: say it once.
    unique = list(dict.fromkeys(problems))
    problems[:] = unique
    return dataclasses.replace(profile, sweep=dataclasses.replace(sweep, steps=tuple(steps)))


def _resolve_transport(profile: Profile, problems: list[Problem]) -> Profile:
    """Each node's transport (its own, else the profile's); a loopback address on this
    machine for each node reached through SSH; and the rules that transport needs."""
    nodes = []
    for i, node in enumerate(profile.nodes):
        transport = node.transport or profile.transport
        tunnel = ""
        if transport == "ssh" and not node.is_local and node.servers:
            tunnel = f"127.77.{i + 1}.1"
            if not profile.main_node.is_local:
                problems.append(Problem(("nodes", i, "transport"), (
                    f"transport \"ssh\" reaches {node.label}'s servers from this machine, but "
                    f"the main node {profile.main_node.label} runs elsewhere; make this machine "
                    f"the main node (host = \"local\", main = true) or use transport \"tcp\"")))
            for j, server in enumerate(node.servers):
                if server.bind != "127.0.0.1":
                    problems.append(Problem(("nodes", i, "servers", j, "bind"), (
                        f"with transport \"ssh\" a server binds 127.0.0.1 on its node (the SSH "
                        f"forward reaches it there); remove bind = {server.bind!r}")))
        for j, server in enumerate(node.servers):
            if server.cache_fill and not server.cache:
                problems.append(Problem(("nodes", i, "servers", j, "cache_fill"), (
                    "cache_fill fills the server's tensor cache, which it keeps only with "
                    "cache = true: set cache = true")))
        nodes.append(dataclasses.replace(node, transport=transport, tunnel=tunnel))
    return dataclasses.replace(profile, nodes=nodes)


def _with_main(profile: Profile) -> Profile:
    if len(profile.nodes) == 1 and not profile.nodes[0].main:
        return dataclasses.replace(profile, nodes=[dataclasses.replace(profile.nodes[0], main=True)])
    return profile


def parse_profile(text: str, file: str = "<profile>") -> Profile:
    """Validate profile TOML text; raise ProfileError listing every problem."""
    try:
        raw = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError as exc:
        raise ProfileError(file, [(exc.line, "", f"not valid TOML: {exc}")]) from None
    problems: list[Problem] = []
    profile: Profile | None = _build(Profile, raw, (), problems)
    if profile is not None:
        profile = _with_main(profile)
        problems += _cross_checks(profile)
        if not problems:
            profile = _resolve_transport(profile, problems)
        if not problems:
            profile = _resolve_sweep(profile, raw, problems)
    if problems:
        lines = key_lines(text)
        raise ProfileError(file, [(line_of(lines, p.path), dotted(p.path), p.message)
                                  for p in problems])
    assert profile is not None  # a profile that could not be built has problems
    return dataclasses.replace(profile, path=file)


#: A profile is a page of TOML; a file past this is not one (and is not read whole).
PROFILE_MAX_BYTES = 1 << 20


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(PROFILE_MAX_BYTES + 1)
        if len(data) > PROFILE_MAX_BYTES:
            raise UserError(f"{p} is over {PROFILE_MAX_BYTES >> 20} MiB: not a profile",
                            "point rpctui at the profile's .toml file")
        text = data.decode("utf-8", "replace")
    except OSError as exc:
        raise UserError(f"cannot read profile {p}: {exc.strerror}",
                        "check the path; examples/ has profiles to start from") from None
    return parse_profile(text, str(p))


def load_document(path: str | Path) -> tomlkit.TOMLDocument:
    """The profile as an editable document that keeps comments and order."""
    return tomlkit.parse(Path(path).read_text())


def set_value(doc: tomlkit.TOMLDocument, path: KeyPath, value: Any) -> None:
    """Set one value in a document, creating tables on the way; comments elsewhere stay."""
    target: Any = doc
    for part in path[:-1]:
        if isinstance(part, int):
            target = target[part]
        else:
            if part not in target:
                target[part] = tomlkit.table()
            target = target[part]
    target[path[-1]] = value


def save_document(doc: tomlkit.TOMLDocument, path: str | Path) -> None:
    """Validate, then write; a document that does not validate is not written."""
    text = tomlkit.dumps(doc)
    parse_profile(text, str(path))
    Path(path).write_text(text)


__all__ = ["ProfileError", "Node", "Server", "Job", "Sweep", "TensorOverride",
           "parse_profile", "load_profile", "load_document", "set_value", "save_document"]
