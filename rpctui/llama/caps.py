"""Probing a node's llama.cpp binaries into a Capabilities record.

The probe agent (:mod:`rpctui.hosts.agents.probe`) gathers raw text on the node:
``--help``, ``--version``, the server's device list (``-d`` with a name no build
has prints every device with its memory) and its start-up banner. This module
turns that text into facts: which flavour and build, which flags each tool
takes, the RPC protocol, the devices. Nothing here assumes a version: a flag
is available when the tool's own help lists it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVER_NAMES = ("ggml-rpc-server", "rpc-server")
TOOL_NAMES: dict[str, tuple[str, ...]] = {
    "server": SERVER_NAMES,
    "bench": ("llama-bench",),
    "cli": ("llama-cli",),
    "completion": ("llama-completion",),
    "http": ("llama-server",),
}

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w+-]*)")
_VERSION_NEW = re.compile(r"version:\s*\S+\s*\(build (\d+), commit ([0-9a-f]+)\)")
_VERSION_OLD = re.compile(r"version:\s*(\d+)\s*\(([0-9a-f]+)\)")
_PROTOCOL = re.compile(r"Starting RPC server v(\d+\.\d+\.\d+)")
# "  CPU: AMD EPYC (24105 MiB, 24105 MiB free)"  (mainline, seed-era)
_DEVICE = re.compile(r"^\s+([\w.-]+):\s+(.*?)\s+\((\d+) MiB, (\d+) MiB free\)\s*$")
# "  CPU:  24105 MiB total, 24105 MiB free"        (ik_llama.cpp)
_DEVICE_IK = re.compile(r"^\s+([\w.-]+):\s+(?:(.*?)\s+)?(\d+) MiB total,\s+(\d+) MiB free\s*$")
_BACKEND_MEMORY = re.compile(r"backend memory\s*:\s*(\d+) MB")
_CREATE_BACKEND = re.compile(r"create_backend: using (\S+) backend")


@dataclass(frozen=True)
class Device:
    """A backend device as the build lists it."""

    name: str
    description: str
    total_mib: int | None
    free_mib: int | None


@dataclass(frozen=True)
class Tool:
    """One binary and the flags its --help lists."""

    path: str
    flags: frozenset[str]
    help: str

    def has(self, *flags: str) -> bool:
        return any(f in self.flags for f in flags)

    def flag_line(self, flag: str) -> str:
        """The help line that documents ``flag`` (with its value form), or ""."""
        for line in self.help.splitlines():
            if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", line):
                return line
        return ""


@dataclass(frozen=True)
class Capabilities:
    """What one node's llama.cpp can do, as probed."""

    node: str
    tools: dict[str, Tool] = field(default_factory=dict)
    flavour: str = "unknown"
    build_number: int | None = None
    build_commit: str | None = None
    protocol: str | None = None
    devices: tuple[Device, ...] = ()
    client_devices: tuple[Device, ...] = ()
    has_stdbuf: bool = False
    has_setsid: bool = True
    hostname: str = ""
    mem_total_mib: int | None = None
    mem_available_mib: int | None = None
    banner: str = ""
    #: the link RPC traffic takes: interface, Mb/s and MTU (None where the node does not say)
    link: tuple[str, int | None, int | None] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def build(self) -> str:
        """The build as llama.cpp prints it: ``commit (number)``; "unknown" when not probed."""
        if self.build_commit is None and self.build_number is None:
            return "unknown"
        return f"{self.build_commit or '?'} ({self.build_number if self.build_number is not None else '?'})"

    @property
    def server(self) -> Tool | None:
        return self.tools.get("server")


@functools.lru_cache(maxsize=64)
def help_flags(text: str) -> frozenset[str]:
    """Every option token a --help text mentions (``-ngl``, ``--rpc``, ``-lm`` ...)."""
    return frozenset(m.group(1) for m in _FLAG.finditer(text))


def parse_devices(text: str) -> tuple[Device, ...]:
    """Device lines from ``-d <unknown>``, ``--list-devices`` or a server banner."""
    devices: list[Device] = []
    for line in text.splitlines():
        m = _DEVICE.match(line) or _DEVICE_IK.match(line)
        if m:
            devices.append(Device(m.group(1), (m.group(2) or "").strip(), int(m.group(3)),
                                  int(m.group(4))))
    if not devices:
        # Seed-era servers name one backend and an optional memory figure.
        backend = _CREATE_BACKEND.search(text)
        memory = _BACKEND_MEMORY.search(text)
        if backend:
            mib = int(memory.group(1)) if memory else None
            devices.append(Device(backend.group(1), "", mib, mib))
    return tuple(devices)


def parse_version(text: str) -> tuple[int | None, str | None]:
    m = _VERSION_NEW.search(text) or _VERSION_OLD.search(text)
    if not m:
        return None, None
    return int(m.group(1)), m.group(2)


def detect_flavour(tools: dict[str, Tool], banner: str) -> str:
    """mainline (current), seed-era (mainline with -m) or ik (ik_llama.cpp)."""
    server = tools.get("server")
    bench = tools.get("bench")
    if "Using devices:" in banner or (bench and bench.has("-fmoe", "--fused-moe", "-mla")):
        return "ik"
    if server and Path(server.path).name == "ggml-rpc-server":
        return "mainline"
    if server and server.has("--mem"):
        return "seed-era"
    if bench and bench.has("-lm", "--load-mode"):
        return "mainline"
    if server or bench:
        return "seed-era"
    return "unknown"


def capabilities_from_probe(node: str, raw: dict[str, Any]) -> Capabilities:
    """Turn the probe agent's JSON into a Capabilities record."""
    tools: dict[str, Tool] = {}
    versions: list[tuple[int | None, str | None]] = []
    client_devices: tuple[Device, ...] = ()
    listed = False
    for role, info in raw.get("binaries", {}).items():
        help_text = info.get("help", {}).get("output", "")
        tools[role] = Tool(info["path"], help_flags(help_text), help_text)
        if "version" in info:
            versions.append(parse_version(info["version"].get("output", "")))
        if "list_devices" in info:
            client_devices = parse_devices(info["list_devices"].get("output", ""))
            listed = True
    server_info = raw.get("binaries", {}).get("server", {})
    banner = server_info.get("banner", {}).get("output", "")
    devices = parse_devices(server_info.get("devices", {}).get("output", "")) or parse_devices(banner)
    if not listed and raw.get("binaries", {}).get("bench"):
        # A client that cannot list its devices (ik_llama.cpp has no --list-devices) runs the
        # same build as this node's rpc-server: the server's GPUs are the client's.
        client_devices = tuple(d for d in devices if not d.name.upper().startswith("CPU"))
    protocol = _PROTOCOL.search(banner)
    number, commit = next(((n, c) for n, c in versions if n is not None), (None, None))
    total = raw.get("mem_total_kib")
    avail = raw.get("mem_available_kib")
    return Capabilities(
        node=node, tools=tools, flavour=detect_flavour(tools, banner),
        build_number=number, build_commit=commit,
        protocol=protocol.group(1) if protocol else None,
        devices=devices, client_devices=client_devices,
        has_stdbuf=bool(raw.get("stdbuf")), has_setsid=bool(raw.get("setsid", True)),
        hostname=raw.get("hostname", ""),
        mem_total_mib=total // 1024 if total else None,
        mem_available_mib=avail // 1024 if avail else None,
        banner=banner, raw=raw, link=_link(raw.get("link")),
    )


def _link(info: Any) -> tuple[str, int | None, int | None] | None:
    if not isinstance(info, dict) or not info.get("interface"):
        return None
    speed, mtu = info.get("speed_mbps"), info.get("mtu")
    return (str(info["interface"]), speed if isinstance(speed, int) else None,
            mtu if isinstance(mtu, int) else None)
