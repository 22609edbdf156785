"""`rpctui explain LOG...`: what a pasted llama.cpp log says, and what went wrong.

Reads client and server logs of every flavour in the reference (with or without the
common-logger prefix, llama-bench markdown tables included) and pulls out the build,
backends, devices, RPC servers, per-device model/KV/compute buffers, the memory
distribution, the load mode, bench results, and a diagnosis of any failure naming the
device or endpoint responsible. Pure: text in, an Explanation out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from rpctui.llama import logs
from rpctui.llama.bench import backends, bench_label, json_rows, parse_markdown
from rpctui.llama.caps import parse_devices

_BUILD = (
    re.compile(r"^build: ([0-9a-f]{6,}) \((\d+)\)"),  # llama-bench footer
    re.compile(r"version: \S+ \(build (\d+), commit ([0-9a-f]+)\)"),
    re.compile(r"version: (\d+) \(([0-9a-f]+)\)"),
)
_VULKAN_DEV = re.compile(r"ggml_vulkan: (\d+) = (.+?) \|")
_CUDA_DEV = re.compile(r"Device (\d+): (.+?), compute capability")
_BACKEND_USE = re.compile(r"create_backend: using (\S+) backend|using device (\S+) \(")
_CLIENT_DEV = re.compile(r"using device (\S+) \((.*?)\)(?: \(unknown id\))? - (\d+) MiB free")
_LOAD_MODE = re.compile(r"\(load_mode = ([\w+]+)\)|\(mmap = (true|false)\)")
_ARG_MMAP = re.compile(r"(?:--mmap|-mmp)\s+0\b|--no-mmap\b|-lm\s+none\b")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_ENDPOINT = re.compile(r"endpoint\s*:\s*(\S+)")
_RPC_ARG = re.compile(r"--rpc\s+(\S+)")
_ABORT = re.compile(r"terminated by signal (SIG\w+)|Aborted \(core dumped\)|Segmentation fault")


@dataclass
class Explanation:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    build: str = ""
    backends: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    rpc_servers: list[str] = field(default_factory=list)
    server: dict[str, str] = field(default_factory=dict)  #: banner facts of an rpc-server log
    load_mode: str = ""
    layers: str = ""
    buffers: dict[str, dict[str, float]] = field(default_factory=dict)  #: device -> kind -> MiB
    bench: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  #: logs.Failure fields
    diagnosis: str = ""
    responsible: str = ""

    def distribution(self) -> list[tuple[str, float, float]]:
        """(device, MiB, share of all) by model + KV + compute, largest first."""
        totals = {d: sum(k.values()) for d, k in self.buffers.items()}
        grand = sum(totals.values()) or 1.0
        return sorted(((d, round(v, 2), round(v / grand, 4)) for d, v in totals.items()),
                      key=lambda x: -x[1])

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["distribution"] = [{"device": d, "mib": m, "share": s}
                                for d, m, s in self.distribution()]
        return data


def _add(items: list[str], value: str) -> None:
    if value and value not in items:
        items.append(value)


#: A log is read this much at a time (cut at a line that no JSON result spans), each line
#: at most LINE_MAX characters, and at most BENCH_MAX result rows are kept: what explaining a
#: log of any size holds in memory.
WINDOW_CHARS = 8 << 20
LINE_MAX = 64 << 10
BENCH_MAX = 10_000


def explain_text(text: str, name: str = "<log>", into: Explanation | None = None) -> Explanation:
    x = into or Explanation()
    x.files.append(name)
    _explain_window(text, x)
    return x


def explain_stream(fh: BinaryIO, name: str = "<log>",
                   into: Explanation | None = None) -> Explanation:
    """A log of any size (binary junk included), read a window at a time in bounded memory."""
    x = into or Explanation()
    x.files.append(name)
    for window in _windows(_lines(fh)):
        _explain_window(window, x)
    return x


def _lines(fh: BinaryIO) -> Iterator[str]:
    """fh's lines, decoded leniently, each cut to LINE_MAX characters."""
    rest = b""
    skipping = False  #: inside a line already cut: its remainder is dropped
    while chunk := fh.read(1 << 20):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            if not skipping:
                yield part[:LINE_MAX].decode("utf-8", "replace")
            skipping = False
        if len(rest) > LINE_MAX:
            if not skipping:
                yield rest[:LINE_MAX].decode("utf-8", "replace")
            rest, skipping = b"", True
    if rest and not skipping:
        yield rest.decode("utf-8", "replace")


def _windows(lines: Iterator[str]) -> Iterator[str]:
    """Lines joined into windows of about WINDOW_CHARS, each cut before a line that starts at
    the left margin and is no JSON brace (llama-bench's JSON indents the lines of a result),
    or, for a log with no such line, at four times that."""
    window: list[str] = []
    size = 0
    for line in lines:
        if size >= WINDOW_CHARS and (size >= 4 * WINDOW_CHARS or (
                line[:1] not in ("", " ", "\t", "{", "}", "[", "]", ",", '"'))):
            yield "\n".join(window)
            window, size = [], 0
        window.append(line)
        size += len(line) + 1
    if window:
        yield "\n".join(window)


def _explain_window(text: str, x: Explanation) -> None:
    lines = text.splitlines()
    x.lines += len(lines)
    failures: list[logs.Failure] = []
    buffer_lines = logs.BufferLines()
    kv_parts: dict[str, dict[str, float]] = {}
    for line in lines:
        for pattern in _BUILD:
            m = pattern.search(line)
            if m:
                a, b = m.groups()
                x.build = f"{a} ({b})" if not a.isdigit() else f"{b} ({a})"
                break
        if m := _VULKAN_DEV.search(line):
            _add(x.devices, f"Vulkan{m.group(1)}: {m.group(2)}")
            _add(x.backends, "Vulkan")
        if m := _CUDA_DEV.search(line):
            _add(x.devices, f"CUDA{m.group(1)}: {m.group(2)}")
            _add(x.backends, "CUDA")
        if m := _BACKEND_USE.search(line):
            _add(x.backends, re.sub(r"\d*(\[.*)?$", "", m.group(1) or m.group(2)))
        if m := _CLIENT_DEV.search(line):
            _add(x.devices, f"{m.group(1)} ({m.group(2)}): {m.group(3)} MiB free as the client "
                            f"saw it")
        if m := _LOAD_MODE.search(line):
            x.load_mode = m.group(1) or ("mmap" if m.group(2) == "true" else "no mmap")
        elif _ARG_MMAP.search(line) and ("llama-" in line or "rpc" in line):
            x.load_mode = x.load_mode or "no mmap (from the command line)"
        if m := _OFFLOADED.search(line):
            x.layers = f"{m.group(1)}/{m.group(2)}"
        if m := _RPC_ARG.search(line):
            for ep in m.group(1).split(","):
                _add(x.rpc_servers, ep.split("|")[0])
        if protocol := logs.banner_protocol(line):
            x.server["protocol"] = protocol
        if m := _ENDPOINT.search(line):
            x.server["endpoint"] = m.group(1)
        if cache := logs.banner_cache(line):
            x.server["cache"] = cache
        if logs.is_exposure_warning(line):
            x.server["exposed"] = "yes: bound beyond 127.0.0.1, no authentication"
        buf = buffer_lines.feed(line)
        if buf:
            sizes = x.buffers.setdefault(buf.device, {"model": 0.0, "kv": 0.0, "compute": 0.0})
            if buf.kind == "kv":  # a sliding-window model's device holds two caches
                sizes["kv"] = logs.add_kv(kv_parts.setdefault(buf.device, {}), buf)
            else:
                sizes[buf.kind] = max(sizes[buf.kind], buf.mib)
            if buf.endpoint:
                _add(x.rpc_servers, buf.endpoint)
                _add(x.backends, "RPC")
        failure = logs.parse_failure(line)
        if failure:
            failures.append(failure)
        if m := _ABORT.search(line):
            failures.append(logs.Failure("abort", f"the process was ended by "
                                         f"{m.group(1) or 'an abort or crash'}"))
    for row in json_rows(text):
        if len(x.bench) >= BENCH_MAX:
            break
        x.bench.append({"model": row.get("model_type", ""), "backend": backends(row),
                        "test": bench_label(row),
                        "t/s": f"{row['avg_ts']:.2f} ± {row.get('stddev_ts', 0):.2f}"})
    for row in parse_markdown(text)[:max(0, BENCH_MAX - len(x.bench))]:
        x.bench.append(row)
        for b in str(row.get("backend", "")).split(","):
            _add(x.backends, b.strip())
    devices = parse_devices(text)
    for d in devices:
        desc = f": {d.description}" if d.description else ""
        _add(x.devices, f"{d.name}{desc} ({d.total_mib} MiB)" if d.total_mib else d.name)
    collapsed = logs.collapse([logs.Failure(**f) for f in x.failures] + failures)
    x.failures = [dataclasses.asdict(f) for f in collapsed]
    cause = logs.root_cause(collapsed)
    if cause:
        x.diagnosis = cause.message
        x.responsible = cause.endpoint or _local_device(cause, x)


def _local_device(cause: logs.Failure, x: Explanation) -> str:
    if cause.kind not in ("alloc", "hip"):
        return ""
    if cause.device and cause.device in x.buffers or cause.device.startswith(
            ("CUDA", "ROCm", "Vulkan", "CPU")):
        return cause.device
    for prefix in ("CUDA", "Vulkan", "ROCm"):
        if prefix in cause.message or (cause.kind == "hip" and prefix == "ROCm"):
            named = [d for d in x.buffers if d.startswith(prefix)]
            return named[0] if named else prefix
    return ""


def render(x: Explanation) -> str:
    out = [f"log: {', '.join(x.files)} ({x.lines} lines)"]
    out.append(f"build: {x.build or 'not in the log'}")
    if x.backends:
        out.append(f"backends: {', '.join(x.backends)}")
    for d in x.devices:
        out.append(f"device: {d}")
    if x.rpc_servers:
        out.append(f"RPC servers: {', '.join(x.rpc_servers)}")
    for key, value in x.server.items():
        out.append(f"rpc-server {key}: {value}")
    if x.load_mode:
        out.append(f"load mode: {x.load_mode}")
    if x.layers:
        out.append(f"layers offloaded: {x.layers}")
    if x.buffers:
        out.append(f"{'buffers (MiB)':32s} {'model':>10s} {'KV':>9s} {'compute':>9s} {'total':>10s}")
        for device, k in x.buffers.items():
            total = k["model"] + k["kv"] + k["compute"]
            out.append(f"  {device:30s} {k['model']:10.2f} {k['kv']:9.2f} {k['compute']:9.2f} "
                       f"{total:10.2f}")
        out.append("memory distribution: " + ", ".join(
            f"{d}: {m:.0f} M ({100 * s:.0f}%)" for d, m, s in x.distribution()))
    if x.bench:
        out.append("bench results:")
        for row in x.bench:
            out.append(f"  {row.get('test', '?'):>16s}  {row.get('t/s', '?'):>20s}  "
                       f"{row.get('backend', '')}")
    if x.diagnosis:
        who = f" (responsible: {x.responsible})" if x.responsible else ""
        out.append(f"diagnosis: {x.diagnosis}{who}")
        for f in x.failures:
            times = f" ({f['count']} times)" if f["count"] > 1 else ""
            out.append(f"  seen: {f['message']}" + (f" [{f['endpoint']}]" if f["endpoint"] else "")
                       + times)
    else:
        out.append("diagnosis: no failure in this log")
    return "\n".join(out) + "\n"
