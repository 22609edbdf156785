"""llama.cpp log lines -> facts, for every flavour in the reference (pure functions).

Lines may carry a common-logger prefix (``0.00.402.109 I ``); patterns anchor on
content, not on the start of the line. Buffer names come in three spellings:
``RPC[host:port]`` (seed-era), ``RPC0[host:port]`` (current and ik), and local
devices (``CPU_Mapped``, ``CUDA0``, ``Vulkan0``, ``ROCm0``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_MIB = r"=\s*([0-9.]+) MiB"
_NAME = r"(\S+?)"
_BUFFER_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("model", re.compile(rf"(?:load_tensors|llm_load_tensors):\s+{_NAME} model buffer size\s*{_MIB}")),
    ("model", re.compile(rf"llm_load_tensors:\s+{_NAME} buffer size\s*{_MIB}")),
    ("kv", re.compile(rf"(?:llama_kv_cache\w*|llama_context):\s+{_NAME} KV buffer size\s*{_MIB}")),
    # a recurrent (Mamba-style) model's state, in place of a KV cache: counted with the KV
    ("rs", re.compile(rf"llama_memory_recurrent:\s+{_NAME} RS buffer size\s*{_MIB}")),
    ("compute", re.compile(rf"(?:sched_reserve|llama_context|llama_init_from_model|graph_reserve):\s+"
                           rf"{_NAME} compute buffer size\s*{_MIB}")),
)
_ENDPOINT = re.compile(r"^RPC(\d*)\[([^\]]+)\]$")
#: llama_kv_cache_iswa (llama_kv_cache_unified_iswa in b6110): a sliding-window model keeps two
#: caches, and each device that holds layers prints one KV buffer line for each
_KV_CACHE = re.compile(r"_iswa: creating\s+(non-SWA|SWA) KV cache")


@dataclass(frozen=True)
class Buffer:
    kind: str  #: model, kv or compute
    device: str  #: as llama.cpp prints it, e.g. RPC0[127.0.0.1:50052] or CUDA0
    mib: float
    #: for KV: "non-SWA" or "SWA" with a sliding-window model, "RS" for a recurrent model's
    #: state (llama.cpp's RS buffer, counted as KV), else ""
    cache: str = ""

    @property
    def endpoint(self) -> str:
        """host:port for an RPC buffer, "" for a local device."""
        m = _ENDPOINT.match(self.device)
        return m.group(2) if m else ""


def parse_buffer(line: str) -> Buffer | None:
    """A model/KV/compute buffer line, or None. Zero-size lines (sizing passes) are None."""
    if "buffer size" not in line:
        return None
    for kind, pattern in _BUFFER_PATTERNS:
        m = pattern.search(line)
        if m:
            mib = float(m.group(2))
            if mib == 0.0:
                return None
            if kind == "rs":
                return Buffer("kv", m.group(1), mib, "RS")
            return Buffer(kind, m.group(1), mib)
    return None


def add_kv(parts: dict[str, float], buf: Buffer) -> float:
    """Count a KV buffer line into a device's caches (cache -> MiB, the largest seen of each:
    a bench allocates them again per test) and return the device's KV total, both caches of a
    sliding-window model together."""
    parts[buf.cache] = max(parts.get(buf.cache, 0.0), buf.mib)
    return sum(parts.values())


class BufferLines:
    """:func:`parse_buffer` over a log, with the context a KV line needs: which of a
    sliding-window model's two caches it belongs to (the line before says)."""

    def __init__(self) -> None:
        self._cache = ""

    def feed(self, line: str) -> Buffer | None:
        if m := _KV_CACHE.search(line):
            self._cache = m.group(1)
            return None
        buf = parse_buffer(line)
        if buf is not None and buf.kind == "kv" and self._cache and not buf.cache:
            return Buffer(buf.kind, buf.device, buf.mib, self._cache)
        return buf


@dataclass(frozen=True)
class Failure:
    """Why a job or server failed, as its output says it."""

    kind: str
    message: str
    endpoint: str = ""  #: host:port named by the line, when it names one
    device: str = ""  #: the device or buffer named (CUDA0, RPC0[h:p], "GPU device 0")
    size_bytes: int = 0  #: the allocation that failed, when the line gives it in bytes
    count: int = 1  #: how many identical lines said it


_MIB_BYTES = 1 << 20

#: Allocation failures, most specific first: (pattern, group of the device, of bytes, of MiB).
#: ggml-alloc.c names the buffer and its bytes for every backend; ggml-cuda.cu (CUDA and HIP)
#: gives the device's index, MiB and the runtime's reason; llama_model_load repeats the name.
_ALLOC: tuple[tuple[re.Pattern[str], int, int, int], ...] = (
    (re.compile(r"failed to allocate (\S+) buffer of size (\d+)"), 1, 2, 0),
    (re.compile(r"allocating ([0-9.]+) MiB on device (\d+): cudaMalloc failed: ([^\n]+?)\s*$"),
     2, 0, 1),
    (re.compile(r"unable to allocate (\S+) buffer"), 1, 0, 0),
    (re.compile(r"ggml_vulkan: Device memory allocation of size (\d+) failed"), 0, 1, 0),
)


def _alloc_failure(line: str) -> Failure | None:
    for pattern, g_dev, g_bytes, g_mib in _ALLOC:
        m = pattern.search(line)
        if not m:
            continue
        cuda = pattern.pattern.startswith("allocating")  # ggml-cuda.cu's line: index and reason
        device = m.group(g_dev) if g_dev else "a Vulkan device"
        if cuda:
            device = f"GPU device {device}"
        size = int(m.group(g_bytes)) if g_bytes else 0
        mib = size / _MIB_BYTES if size else float(m.group(g_mib)) if g_mib else 0.0
        ep = _ENDPOINT.match(device)
        what = f"{mib:.2f} MiB" + (f" ({size} bytes)" if size else "") if mib else "a buffer"
        who = "that server" if ep else "that device"
        reason = f" (cudaMalloc: {m.group(3)})" if cuda else ""
        return Failure("alloc", f"could not allocate {what} on {device}: {who} ran out of "
                       f"memory{reason}", ep.group(2) if ep else "", device, size)
    return None


_FAILURES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("alloc", re.compile(r"cudaMalloc failed: out of memory"), "a CUDA device ran out of memory"),
    ("alloc", re.compile(r"ErrorOutOfDeviceMemory"), "a Vulkan device ran out of memory"),
    ("alloc",
     re.compile(r"ggml_aligned_malloc: insufficient memory \(attempted to allocate\s+([0-9.]+ MB)\)"),
     "a CPU backend could not allocate {0}"),
    ("kv", re.compile(r"failed to allocate buffer for kv cache"), "the KV cache did not fit"),
    ("compute", re.compile(r"failed to allocate compute (?:pp )?buffers?"),
     "the compute buffers did not fit"),
    ("protocol", re.compile(r"RPC server version mismatch: (\S+)"),
     "a server speaks RPC protocol {0}, another build than the client's"),
    ("protocol", re.compile(r"HELLO request size mismatch.*"),
     "the client and server builds speak different RPC protocols"),
    ("handshake", re.compile(r"RPC handshake failed for (\S+)"), "RPC handshake with {0} failed"),
    ("crashed", re.compile(r"Remote RPC server crashed or returned malformed response"),
     "a server crashed or was killed during the job"),
    ("connect", re.compile(r"Failed to connect to (\S+)"), "could not connect to server {0}"),
    ("config", re.compile(r"quantized V cache was requested, but this requires Flash Attention"),
     "a quantized V cache needs flash attention (set flash_attn = true)"),
    ("model", re.compile(r"failed to load model '([^']*)'"), "llama.cpp could not load the model {0}"),
    ("hip", re.compile(r"HSA_STATUS_ERROR_EXCEPTION"), "the ROCm runtime aborted (HSA exception)"),
    ("oom-killer", re.compile(r"(?i:out of memory): Killed process (\d+) \(([^)]+)\)"),
     "the kernel's OOM killer killed {1} (pid {0})"),
)


# One pass that rules out almost every line before the sixteen patterns are tried.
# Plain literals, case-sensitive: several times faster than one case-blind pattern.
_FAILURE_HINT = re.compile(r"alloc|insufficient memory|OutOfDeviceMemory|mismatch|handshake|"
                           r"crashed|Failed to connect|quantized V|failed to load model|"
                           r"HSA_STATUS|ut of memory")


def may_fail(text: str) -> bool:
    """False when no line of ``text`` can report a failure (one scan of a whole chunk)."""
    return _FAILURE_HINT.search(text) is not None


def parse_failure(line: str) -> Failure | None:
    """The failure a line reports, or None."""
    if not _FAILURE_HINT.search(line):
        return None
    alloc = _alloc_failure(line)
    if alloc is not None:
        return alloc
    for kind, pattern, text in _FAILURES:
        m = pattern.search(line)
        if m:
            groups = m.groups()
            endpoint = ""
            if kind in ("connect", "handshake") and groups:
                endpoint = groups[0].rstrip(",")
            return Failure(kind, text.format(*groups), endpoint)
    return None


def _detail(f: Failure) -> int:
    """How much an allocation failure says: a named device, its size in bytes, an endpoint."""
    return bool(f.device and not f.device.startswith(("GPU device", "a "))) + bool(
        f.size_bytes) + bool(f.endpoint)


def collapse(failures: list[Failure]) -> list[Failure]:
    """Identical failures once each, in order of first appearance, with how often they came."""
    seen: dict[tuple[str, str, str], Failure] = {}
    for f in failures:
        key = (f.kind, f.message, f.endpoint)
        first = seen.get(key)
        seen[key] = f if first is None else replace(first, count=first.count + f.count)
    return list(seen.values())


# Precedence when several lines fail: the root cause beats its consequences.
_RANK = {"protocol": 0, "oom-killer": 1, "alloc": 1, "kv": 2, "compute": 3, "config": 4,
         "handshake": 5, "connect": 6, "hip": 7, "crashed": 8, "model": 9, "abort": 10}


def root_cause(failures: list[Failure]) -> Failure | None:
    """The failure that explains the others: by kind, then the one that says the most."""
    if not failures:
        return None
    return min(failures, key=lambda f: (_RANK.get(f.kind, 50), -_detail(f)))


_BANNER_PROTOCOL = re.compile(r"Starting RPC server v(\d+\.\d+\.\d+)")
_BANNER_CACHE = re.compile(r"local cache\s*:\s*(\S.*?)\s*$")


def banner_protocol(line: str) -> str | None:
    m = _BANNER_PROTOCOL.search(line)
    return m.group(1) if m else None


def banner_cache(line: str) -> str | None:
    m = _BANNER_CACHE.search(line)
    if not m or m.group(1) == "n/a":
        return None
    return m.group(1)


def is_exposure_warning(line: str) -> bool:
    return "Never expose the RPC server to an open network" in line


# -- the profiler's lines ----------------------------------------------------------------------

#: The commands an rpc-server logs, one line each, when started with GGML_RPC_DEBUG=1 (mainline;
#: b6110 and ik print nothing): "[get_tensor] buffer: ..., size: N". Names are rpc_server's
#: methods. The lines are counted on the node (rpctui/hosts/agents/rpccount.py, given these).
RPC_COMMANDS = frozenset({
    "hello", "get_device_memory", "alloc_buffer", "get_alloc_size", "get_alignment",
    "get_max_size", "buffer_get_base", "free_buffer", "buffer_clear", "memset_tensor",
    "set_tensor", "set_tensor_hash", "init_tensor", "get_tensor", "copy_tensor",
    "graph_compute", "graph_recompute"})
#: Of those, the ones the server answers (rpc_serve_client sends a response; pinned mainline,
#: protocol 7). The client's dispatcher sends commands in order and waits for each answer, so
#: each of these is one round trip on the wire; the others go one way and overlap.
RPC_REPLY_COMMANDS = frozenset({
    "hello", "get_device_memory", "alloc_buffer", "get_alloc_size", "get_alignment",
    "get_max_size", "buffer_get_base", "set_tensor_hash", "get_tensor", "copy_tensor"})
#: Of the answered ones, those a client sends while it sets up a model or a context, not per
#: token: the breakdown's round trips per token leave them out.
RPC_SETUP_COMMANDS = frozenset({
    "hello", "get_device_memory", "alloc_buffer", "get_alloc_size", "get_alignment",
    "get_max_size", "buffer_get_base"})


@dataclass(frozen=True)
class BenchProgress:
    """One of llama-bench's --progress lines: "llama-bench: benchmark 2/4: generation run 1/5"."""

    test: int  #: 1-based, in llama-bench's order
    tests: int
    what: str  #: starting, warmup prompt run, warmup generation run, depth run, prompt run,
    #: generation run
    rep: int = 0
    reps: int = 0


_PROGRESS = re.compile(r"^llama-bench: benchmark (\d+)/(\d+): ([a-z ]+?)(?: (\d+)/(\d+))?"
                       r"(?: \(cached\))?$")


def bench_progress(line: str) -> BenchProgress | None:
    m = _PROGRESS.match(line.strip())
    if not m:
        return None
    return BenchProgress(int(m.group(1)), int(m.group(2)), m.group(3),
                         int(m.group(4) or 0), int(m.group(5) or 0))
