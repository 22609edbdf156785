"""`rpctui build PROFILE`: the same llama.cpp on every node, built there for its backend.

Every node whose profile entry says ``build = FLAVOUR`` gets that flavour (rpctui's pinned
sdist, sent from this machine: nodes need no internet) built for its backend (``backend`` in
the profile, else what its servers' devices and its drivers say: CUDA, Vulkan, ROCm or CPU)
into its ``build_dir`` (default ``~/.cache/rpctui/llama`` there), with the same cmake flags as
rpctui's own build, so the build key (flavour, version, flags) means one thing everywhere.
A CUDA build is for the compute capabilities of the node's GPUs (``-DCMAKE_CUDA_ARCHITECTURES``,
part of the key), not for llama.cpp's own list of seven or more architectures. Nodes that
match (architecture, C library, backend, driver major, GPU architectures) form a class: the
first builds, the others get its binaries copied (a tar stream through this machine). A
node that has the key installed is left alone; an interrupted build resumes from its build
tree. A node that lacks a tool fails with the packages to install for its distribution
(ROCm: hipcc, hipBLAS, rocBLAS, and the flavour's minimum version). The run then finds
the binaries at ``BUILD_DIR/FLAVOUR/bin`` (a link to the key), and `check` compares what every
node's binaries report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import Host, Spawned, agent_argv, agent_source, json_lines
from rpctui.llama.build import (
    BASE_CMAKE,
    BUILD_INFO_TEMPLATE,
    FLAVOURS,
    Flavour,
    backend_cmake,
    build_key,
    cuda_archs,
    sdist_path,
)
from rpctui.profile.schema import Node, Profile
from rpctui.run import events as ev

_AGENT = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "builder.py"
DEFAULT_BUILD_DIR = "~/.cache/rpctui/llama"


#: what to install, by distribution family, for a missing tool
PACKAGES: dict[str, dict[str, str]] = {
    "debian": {"cmake": "cmake", "ninja": "ninja-build", "c++": "g++", "glslc": "glslc",
               "vulkan": "libvulkan-dev", "nvcc": "nvidia-cuda-toolkit", "hipcc": "hipcc",
               "hipblas": "libhipblas-dev", "rocblas": "librocblas-dev"},
    "fedora": {"cmake": "cmake", "ninja": "ninja-build", "c++": "gcc-c++", "glslc": "glslc",
               "vulkan": "vulkan-loader-devel", "nvcc": "cuda-toolkit (NVIDIA's repository)",
               "hipcc": "rocm-hip-devel", "hipblas": "hipblas-devel",
               "rocblas": "rocblas-devel"},
    "arch": {"cmake": "cmake", "ninja": "ninja", "c++": "gcc", "glslc": "shaderc",
             "vulkan": "vulkan-headers", "nvcc": "cuda", "hipcc": "rocm-hip-sdk",
             "hipblas": "hipblas", "rocblas": "rocblas"},
}
_INSTALL = {"debian": "apt-get install", "fedora": "dnf install", "arch": "pacman -S"}


def node_build_dir(node: Node) -> str:
    return node.build_dir or DEFAULT_BUILD_DIR


def node_bin_dir(node: Node) -> str:
    """Where `rpctui build PROFILE` leaves the node's binaries for its `build` flavour."""
    return f"{node_build_dir(node).rstrip('/')}/{node.build}/bin"


def _family(info: Mapping[str, Any]) -> str:
    ids = f"{info.get('os', '')} {info.get('os_like', '')}".lower().split()
    for family, names in (("debian", ("debian", "ubuntu")), ("fedora", ("fedora", "rhel", "centos")),
                          ("arch", ("arch",))):
        if any(i in names for i in ids):
            return family
    return "debian"


def backend_of(node: Node, info: Mapping[str, Any]) -> str:
    """The profile's word, else the servers' device names, else the node's drivers."""
    if node.backend:
        return node.backend
    names = " ".join(d for s in node.servers for d in s.devices).lower()
    for prefix, backend in (("cuda", "cuda"), ("vulkan", "vulkan"), ("rocm", "rocm")):
        if prefix in names:
            return backend
    tools = info.get("tools") or {}
    if tools.get("nvidia-smi") and info.get("driver"):
        return "cuda"
    return "cpu"


#: missing tools that are a version of one, shown and installed in words
VULKAN_TOO_OLD = "newer Vulkan headers"
HIP_TOO_OLD = "a newer ROCm"


def missing_tools(info: Mapping[str, Any], backend: str,
                  flavour: Flavour | None = None) -> list[str]:
    tools = info.get("tools") or {}
    missing = [t for t in ("cmake",) if not tools.get(t)]
    if not (tools.get("ninja") or tools.get("make")):
        missing.append("ninja")
    if not (tools.get("c++") or tools.get("g++") or tools.get("clang++")):
        missing.append("c++")
    if backend == "cuda" and not tools.get("nvcc"):
        missing.append("nvcc")
    if backend == "vulkan":
        if not tools.get("glslc"):
            missing.append("glslc")
        if not info.get("vulkan_headers"):
            missing.append("vulkan")
        elif flavour is not None and flavour.vulkan_headers and tuple(
                info.get("vulkan_header_version") or (0, 0, 0)) < flavour.vulkan_headers:
            missing.append(VULKAN_TOO_OLD)
    if backend == "rocm":
        if not tools.get("hipcc"):
            missing.append("hipcc")
        libs = info.get("hip_libs") or {}
        missing += [name for name in ("hipblas", "rocblas") if not libs.get(name)]
        have = info.get("hip_version")
        if (have and flavour is not None and flavour.hip_version
                and tuple(have) < flavour.hip_version):
            missing.append(HIP_TOO_OLD)
    return missing


def install_hint(info: Mapping[str, Any], missing: list[str],
                 flavour: Flavour | None = None) -> str:
    family = _family(info)
    hint = []
    packages = " ".join(dict.fromkeys(PACKAGES[family][m] for m in missing
                                      if m not in (VULKAN_TOO_OLD, HIP_TOO_OLD)))
    if packages:
        hint.append(f"install them ({info.get('os_name') or family}): sudo "
                    f"{_INSTALL[family]} {packages}")
    if VULKAN_TOO_OLD in missing and flavour is not None and flavour.vulkan_headers:
        has = ".".join(str(v) for v in info.get("vulkan_header_version") or ()) or "older"
        need = ".".join(str(v) for v in flavour.vulkan_headers)
        hint.append(f"{flavour.name} needs Vulkan headers {need} or newer and the node has "
                    f"{has}: install a newer libvulkan-dev (Debian 13's; on Debian 12 or "
                    f"Ubuntu 22.04, LunarG's Vulkan SDK) or build for another backend")
    if HIP_TOO_OLD in missing and flavour is not None and flavour.hip_version:
        has = ".".join(str(v) for v in info.get("hip_version") or ())
        need = ".".join(str(v) for v in flavour.hip_version)
        hint.append(f"{flavour.name} needs ROCm/HIP {need} or newer and the node has {has} "
                    f"(in {info.get('rocm_path')}): install AMD's ROCm {need} or later and "
                    f"set ROCM_PATH in the node's env if it is not in /opt/rocm, or build for "
                    f"vulkan")
    return "; ".join(hint)


def node_flags(backend: str, info: Mapping[str, Any]) -> tuple[str, ...]:
    """The backend's cmake flags for this node (for CUDA, its GPUs' architectures)."""
    return backend_cmake(backend, info.get("compute_caps") or ())


def node_key(flavour: Flavour, backend: str, info: Mapping[str, Any]) -> str:
    return build_key(flavour, node_flags(backend, info))


def node_class(info: Mapping[str, Any], backend: str) -> tuple[str, ...]:
    """Nodes whose binaries are interchangeable: one builds, the others get a copy."""
    if backend == "rocm":  # built for the node's own GPUs (llama.cpp's default for HIP)
        return (str(info.get("arch")), str(info.get("libc")), backend,
                ".".join(str(v) for v in info.get("hip_version") or ()),
                ";".join(info.get("gfx_targets") or ()))
    if backend != "cuda":
        return (str(info.get("arch")), str(info.get("libc")), backend, "", "")
    driver = str(info.get("driver") or "").split(".")[0]
    archs = ";".join(cuda_archs(info.get("compute_caps") or ()))
    return (str(info.get("arch")), str(info.get("libc")), backend, driver, archs)


class Builder:
    """Builds one profile's flavours on its nodes; tells ``emit`` about each step."""

    def __init__(self, profile: Profile, hosts: Mapping[str, Host],
                 emit: Callable[[ev.Event], None], jobs: int | None = None) -> None:
        self.profile = profile
        self.hosts = hosts
        self.emit = emit
        self.jobs = jobs

    async def _agent(self, node: Node, config: dict[str, Any],
                     each: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        source = agent_source(_AGENT, {"build_dir": node_build_dir(node), **config})
        spawned: Spawned = await self.hosts[node.label].spawn(
            agent_argv(node.python, source, "rpctui-build"), launched=False)
        await spawned.write(source)
        out: list[dict[str, Any]] = []

        def keep(data: dict[str, Any]) -> None:
            out.append(data)
            if each:
                each(data)

        errors = await json_lines(spawned, keep)
        if not out:
            raise UserError(f"node {node.label}: the build agent did not answer: "
                            f"{(errors.strip().splitlines() or ['no output'])[-1]}",
                            f"check {node.label}'s python3 ({node.python})")
        return out

    async def run(self) -> bool:
        nodes = [n for n in self.profile.nodes if n.build]
        if not nodes:
            raise UserError(f"{self.profile.path}: no node says build = FLAVOUR",
                            'set build = "mainline" (or b6110, ik) on the nodes rpctui should '
                            "build llama.cpp for", ExitCode.USAGE)
        infos = await asyncio.gather(*(self.inspect(n) for n in nodes))
        plans: dict[tuple[str, ...], list[tuple[Node, str, dict[str, Any]]]] = {}
        #: per class, a node that has the build already: the others copy it from there
        built: dict[tuple[str, ...], tuple[Node, dict[str, Any]]] = {}
        ok = True
        for node, info in zip(nodes, infos, strict=True):
            flavour = FLAVOURS[str(node.build)]
            backend = backend_of(node, info)
            key = node_key(flavour, backend, info)
            group = (flavour.name, key, *node_class(info, backend))
            if key in (info.get("installed") or {}):
                built.setdefault(group, (node, info["installed"][key]))
                self.emit(ev.NodeBuilt(node=node.label, flavour=flavour.name, key=key,
                                       how="up to date", backend=backend,
                                       record=_record(info["installed"][key]),
                                       message=f"{node_build_dir(node)}/{key}"))
                await self._agent(node, {"role": "link", "flavour": flavour.name, "key": key})
                continue
            missing = missing_tools(info, backend, flavour)
            if missing:
                self.emit(ev.NodeFailed(node=node.label, message=(
                    f"node {node.label} cannot build llama.cpp for {backend}: it has no "
                    f"{', '.join(missing)}"), fix=install_hint(info, missing, flavour)))
                ok = False
                continue
            plans.setdefault(group, []).append((node, backend, info))
        results = await asyncio.gather(*(self._class(members, built.get(group))
                                         for group, members in plans.items()))
        return ok and all(results)

    async def inspect(self, node: Node) -> dict[str, Any]:
        return (await self._agent(node, {"role": "inspect", "env": dict(node.env)}))[-1]

    async def _class(self, members: list[tuple[Node, str, dict[str, Any]]],
                     built: tuple[Node, dict[str, Any]] | None) -> bool:
        """Copy to a class's nodes from one that has the build (``built``: node and record),
        else build on the first and copy to the others."""
        first, backend, info = members[0]
        flavour = FLAVOURS[str(first.build)]
        flags = node_flags(backend, info)
        key = build_key(flavour, flags)
        if built is not None:
            first, record = built
            targets = members
        else:
            found = await self._build(first, flavour, backend, flags, key)
            if found is None:
                return False
            record, targets = found, members[1:]
        ok = True
        for node, _, _ in targets:
            start = time.monotonic()
            try:
                await self._copy(first, node, key)
                await self._agent(node, {"role": "link", "flavour": flavour.name, "key": key})
            except (OSError, UserError) as exc:
                self.emit(ev.NodeFailed(node=node.label, message=(
                    f"copying the build from {first.label} to {node.label} failed: {exc}"),
                    fix="run rpctui build again (it resumes)"))
                ok = False
                continue
            self.emit(ev.NodeBuilt(node=node.label, flavour=flavour.name, key=key,
                                   how=f"copied from {first.label}", backend=backend,
                                   record=_record(record),
                                   seconds=round(time.monotonic() - start, 3),
                                   message=f"{node_build_dir(node)}/{key}"))
        return ok

    async def _build(self, node: Node, flavour: Flavour, backend: str, flags: tuple[str, ...],
                     key: str) -> dict[str, Any] | None:
        start = time.monotonic()
        host = self.hosts[node.label]
        archive = sdist_path(flavour, lambda _m, _f: None)
        if host.address() is None:
            sdist = str(archive)
        else:
            sdist = f"{node_build_dir(node).rstrip('/')}/sdist/{archive.name}"
            self.emit(ev.BuildProgress(node=node.label, message=f"sending {archive.name}"))
            await host.send_file(archive, sdist, 0, lambda _d: None)
        cmake = [*BASE_CMAKE, *flavour.extra_cmake, *flags,
                 f"-DLLAMA_BUILD_NUMBER={flavour.build_number}",
                 f"-DLLAMA_BUILD_COMMIT={flavour.build_commit}"]
        told = [0.0]

        def each(data: dict[str, Any]) -> None:
            now = time.monotonic()
            if "step" in data and (now - told[0] > 1.0 or data["step"][0] == data["step"][1]):
                told[0] = now
                self.emit(ev.BuildProgress(node=node.label, step=int(data["step"][0]),
                                           total=int(data["step"][1]),
                                           message=f"building {flavour.name} for {backend}"))
            elif "status" in data:
                self.emit(ev.BuildProgress(node=node.label, message=str(data["status"])))

        out = await self._agent(node, {
            "role": "build", "flavour": flavour.name, "version": flavour.version, "key": key,
            "stem": flavour.sdist_stem, "vendor": flavour.vendor, "sdist": sdist,
            "cmake": cmake, "targets": list(flavour.targets), "backend": backend,
            "commit": flavour.build_commit, "number": flavour.build_number,
            "build_info": BUILD_INFO_TEMPLATE.format(number=flavour.build_number,
                                                     commit=flavour.build_commit,
                                                     target="@TARGET@", common="@COMMON@"),
            "jobs": self.jobs, "env": dict(node.env)}, each)
        last = out[-1]
        if "done" not in last:
            log = "\n    ".join(last.get("log") or [])
            self.emit(ev.NodeFailed(node=node.label, message=(
                f"building {flavour.name} on {node.label} failed: {last.get('error')}"
                + (f"; last lines:\n    {log}" if log else "")),
                fix=f"read {last.get('log_path', 'the build log')} on {node.label}; run "
                    f"rpctui build again once fixed (it resumes)"))
            return None
        record: dict[str, Any] = last["done"]
        self.emit(ev.NodeBuilt(node=node.label, flavour=flavour.name, key=key, how="built",
                               backend=backend, record=_record(record),
                               seconds=round(time.monotonic() - start, 3),
                               message=f"{node_build_dir(node)}/{key}"))
        return record

    async def _copy(self, source: Node, target: Node, key: str) -> None:
        """The installed KEY folder from one node to another, through here: tar, as base64
        text (the hosts carry text), unpacked on the target."""
        reader = await self.hosts[source.label].spawn(
            ["sh", "-c", _CD + 'tar -cf - "$1" | base64', node_build_dir(source), key],
            launched=False)
        writer = await self.hosts[target.label].spawn(
            ["sh", "-c", _CD + 'rm -rf "$1" && base64 -d | tar -xf -', node_build_dir(target),
             key],
            launched=False)
        errors = ""
        async for stream, text in reader.chunks():
            if stream == "stdout":
                await writer.write(text.encode())
            else:
                errors += text
        await writer.close_stdin()
        async for stream, text in writer.chunks():
            if stream != "stdout":
                errors += text
        rc_out, rc_in = await reader.wait(), await writer.wait()
        if rc_out or rc_in:
            raise OSError(f"exit {rc_out} on {source.label}, {rc_in} on {target.label}: "
                          f"{errors.strip()[-300:]}")


#: cd to $0, a build_dir that may start with ~ (argv keeps it literal: the node's shell
#: gives it its home)
_CD = 'd="$0"; case "$d" in "~"*) d="$HOME${d#"~"}";; esac; mkdir -p "$d" && cd "$d" && '


def _record(record: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(record.get(k, ""))) for k in ("arch", "backend", "commit", "compiler",
                                                        "libc", "number", "protocol", "version"))
