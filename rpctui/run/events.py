"""The event types: everything that happens in a run is one of these.

Events are small, frozen and timestamped. ``t`` is seconds since the run
started (monotonic clock); wall-clock time appears only in RunStarted. Every
event serialises to one JSON object with its class name under ``"type"``, and
:func:`from_dict` reads it back, so a recorded run replays exactly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from rpctui.run.redact import redact_argv

REGISTRY: dict[str, type[Event]] = {}


# -- rows that travel inside events (JSON arrays, in this field order) -------------------------

class DeviceInfo(NamedTuple):
    name: str
    description: str
    total_mib: int | None
    free_mib: int | None


class GpuReading(NamedTuple):
    name: str
    kind: str  #: nvidia or amd
    vram_used_mib: float | None
    vram_total_mib: float | None
    gtt_used_mib: float | None  #: AMD APUs: system memory the GPU maps
    gtt_total_mib: float | None
    util_pct: int | None


class NetCounters(NamedTuple):
    interface: str
    rx_bytes: int
    tx_bytes: int


class ProcReading(NamedTuple):
    endpoint: str
    rss_mib: float
    cpu_s: float
    #: the busiest thread's CPU time per sampling interval, summed: time spent computing
    busiest_s: float = 0.0


class RpcCounts(NamedTuple):
    """An rpc-server's commands so far, counted on its node from its GGML_RPC_DEBUG lines."""

    endpoint: str
    commands: int
    replies: int  #: answered commands after set-up: round trips on the wire
    to_bytes: int  #: tensor bytes sent to the server (set_tensor)
    from_bytes: int  #: tensor bytes read back from it (get_tensor)


class DistributionRow(NamedTuple):
    node: str
    device: str  #: the endpoint's buffer or a local device
    model_mib: float
    kv_mib: float
    compute_mib: float


class PlannedRow(NamedTuple):
    device: str
    node: str
    model_mib: float
    kv_mib: float
    usable_mib: float
    fits: bool


class CheckedRow(NamedTuple):
    device: str
    model_planned_mib: float
    model_allocated_mib: float
    kv_planned_mib: float
    kv_allocated_mib: float


class ComputeChecked(NamedTuple):
    device: str
    estimated_mib: float
    allocated_mib: float


class BreakdownPart(NamedTuple):
    """One rpc-server's share of a token's time (ms per token; None where not measured)."""

    endpoint: str
    node: str
    compute_ms: float | None  #: the server computing (busiest thread, or its GPUs when busier)
    latency_ms: float | None  #: round trips x the link's round-trip time
    transfer_ms: float | None  #: bytes both ways / the link's measured throughput
    to_bytes: float  #: main -> server, per token
    from_bytes: float  #: server -> main, per token
    round_trips: float | None  #: per token
    rtt_ms: float | None
    cpu_ms: float | None  #: the server's CPU time, all threads, per token
    gpu_busy_ms: float | None


@dataclass(frozen=True)
class Event:
    t: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["type"] = type(self).__name__
        return data


_ROW_TYPES: dict[str, dict[str, type | None]] = {}


def _row_types(cls: type[Event]) -> dict[str, type | None]:
    """For each tuple field: the NamedTuple its items are (None for plain tuples); once a class."""
    if cls.__name__ in _ROW_TYPES:
        return _ROW_TYPES[cls.__name__]
    out: dict[str, type | None] = _ROW_TYPES.setdefault(cls.__name__, {})
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            out[name] = item if isinstance(item, type) and issubclass(item, tuple) and hasattr(
                item, "_fields") else None
    return out


_FIELD_NAMES: dict[str, frozenset[str]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the shape a field's type says (a damaged recording's may not)."""
    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args,
                                                                             strict=True))
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1])
                                               for k, v in value.items())
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        fields = _hints(hint)
        required = len(fields) - len(getattr(hint, "_field_defaults", {}))
        return (isinstance(value, list | tuple) and required <= len(value) <= len(fields)
                and all(_fits(v, h) for v, h in zip(value, fields.values(), strict=False)))
    return True  # a type this check does not know: the event's own constructor decides


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form; unknown fields (from newer versions) are dropped.
    A field whose value has the wrong shape (a damaged recording) is a TypeError."""
    cls = REGISTRY[data["type"]]
    names = _FIELD_NAMES.get(cls.__name__)
    if names is None:
        names = _FIELD_NAMES[cls.__name__] = frozenset(f.name for f in dataclasses.fields(cls))
    values = {k: v for k, v in data.items() if k in names}
    hints = _hints(cls)
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise TypeError(f"{cls.__name__}.{name} is {value!r:.60}, not {hints[name]}")
    for name, row in _row_types(cls).items():
        if isinstance(values.get(name), list):
            values[name] = tuple((row(*v) if row else tuple(v)) if isinstance(v, list) else v
                                 for v in values[name])
    return cls(**values)


# -- the run ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str = ""
    profile: str = ""
    profile_name: str = ""
    command: str = ""
    wall_time: str = ""
    nodes: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()  #: node:port of each server, in --rpc order
    main: str = ""  #: the node that runs the job
    endpoints: tuple[str, ...] = ()  #: host:port of each server (as --rpc names it), same order
    schema: int = 1  #: the recording format (rpctui.run.schema); 1 before it was written


def run_started(profile: Any, run_id: str, command: str) -> RunStarted:
    """The first event of every run, headless or in the app, for this profile."""
    import datetime

    from rpctui.profile.schema import endpoint
    from rpctui.run.schema import SCHEMA_VERSION

    return RunStarted(run_id=run_id, profile=profile.path, profile_name=profile.name,
                      command=command,
                      wall_time=datetime.datetime.now(datetime.UTC).isoformat(
                          timespec="seconds"),
                      nodes=tuple(n.label for n in profile.nodes),
                      servers=tuple(f"{n.label}:{s.port}" for n, s in profile.servers()),
                      main=profile.main_node.label,
                      endpoints=tuple(endpoint(n, s) for n, s in profile.servers()),
                      schema=SCHEMA_VERSION)


@dataclass(frozen=True)
class RunFinished(Event):
    exit_code: int = 0
    message: str = ""


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should read that is not a failure."""

    message: str = ""
    node: str = ""


# -- nodes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeConnecting(Event):
    node: str = ""
    host: str = ""


@dataclass(frozen=True)
class NodeConnected(Event):
    node: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class NodeFailed(Event):
    node: str = ""
    message: str = ""
    fix: str = ""


@dataclass(frozen=True)
class NodeProbed(Event):
    node: str = ""
    hostname: str = ""
    flavour: str = ""
    build: str = ""
    protocol: str = ""
    devices: tuple[DeviceInfo, ...] = ()
    tools: tuple[tuple[str, str], ...] = ()  #: role, path
    mem_total_mib: int | None = None
    mem_available_mib: int | None = None
    link: str = ""  #: the interface RPC traffic takes ("" when not known)
    link_mbps: int | None = None  #: its speed, where the driver says
    mtu: int | None = None


@dataclass(frozen=True)
class PreflightIssue(Event):
    node: str = ""
    check: str = ""
    message: str = ""
    fix: str = ""
    fatal: bool = True


@dataclass(frozen=True)
class PreflightDone(Event):
    ok: bool = True


# -- servers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerStarting(Event):
    node: str = ""
    endpoint: str = ""
    argv: tuple[str, ...] = ()  #: secret values hidden (rpctui.run.redact)
    #: how the main node reaches it: "tcp", or "ssh" (a forward to its 127.0.0.1 port)
    transport: str = "tcp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", redact_argv(self.argv))


@dataclass(frozen=True)
class ServerStarted(Event):
    node: str = ""
    endpoint: str = ""
    pgid: int | None = None
    pid: int | None = None


@dataclass(frozen=True)
class ServerReady(Event):
    node: str = ""
    endpoint: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class ServerBanner(Event):
    node: str = ""
    endpoint: str = ""
    protocol: str = ""
    cache_dir: str = ""
    devices: tuple[str, ...] = ()
    exposed: bool = False  #: bound to something other than 127.0.0.1 (llama.cpp warns)


@dataclass(frozen=True)
class ServerLog(Event):
    node: str = ""
    endpoint: str = ""
    line: str = ""


@dataclass(frozen=True)
class ServerExited(Event):
    node: str = ""
    endpoint: str = ""
    rc: int = 0
    expected: bool = False  #: ended by teardown
    tail: tuple[str, ...] = ()


# -- the job ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobStarted(Event):
    node: str = ""
    kind: str = ""
    argv: tuple[str, ...] = ()  #: secret values hidden (rpctui.run.redact)
    step: int = 0
    servers: tuple[str, ...] = ()
    setup: str = ""  #: a sweep's setup (its variant's name, or the settings it changes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", redact_argv(self.argv))


@dataclass(frozen=True)
class JobLog(Event):
    stream: str = "stderr"
    line: str = ""


@dataclass(frozen=True)
class BufferAllocated(Event):
    """A buffer the client reported: kind is model, kv or compute."""

    kind: str = ""
    device: str = ""
    endpoint: str = ""
    mib: float = 0.0
    step: int = 0
    #: KV of a sliding-window model: "non-SWA" or "SWA" (a device has both); "RS": the state
    #: of a recurrent model's layers (llama.cpp's RS buffer), counted as KV
    cache: str = ""


@dataclass(frozen=True)
class BenchResult(Event):
    step: int = 0
    n_servers: int = 0
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobOutput(Event):
    """Generated text (cli/completion) or other stdout that is not a bench row."""

    text: str = ""


@dataclass(frozen=True)
class JobFinished(Event):
    rc: int = 0
    elapsed_s: float = 0.0
    step: int = 0
    diagnosis: str = ""
    culprit: str = ""  #: node or endpoint held responsible, when known


@dataclass(frozen=True)
class ServiceStatus(Event):
    """`rpctui serve`: where the supervised llama-server stands."""

    state: Literal["loading", "healthy", "restarting", "failed", "stopped"] = "loading"
    message: str = ""
    url: str = ""  #: where it answers, on the main node
    restarts: int = 0  #: restarts so far


# -- teardown -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeardownStarted(Event):
    reason: str = ""


@dataclass(frozen=True)
class ProcessGone(Event):
    node: str = ""
    pgid: int = 0
    what: str = ""


@dataclass(frozen=True)
class TeardownFailed(Event):
    node: str = ""
    message: str = ""


@dataclass(frozen=True)
class TeardownDone(Event):
    elapsed_s: float = 0.0


# -- telemetry ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeSample(Event):
    """One sampler reading of a node. Absent readings are None or left out of the tuples."""

    node: str = ""
    mem_total_mib: float | None = None
    mem_available_mib: float | None = None
    gpus: tuple[GpuReading, ...] = ()
    net: tuple[NetCounters, ...] = ()  #: counters since boot
    procs: tuple[ProcReading, ...] = ()
    #: endpoint, bytes received on its port (kernel per-connection counters, summed)
    received: tuple[tuple[str, int], ...] = ()
    #: endpoint, bytes its server sent (and were acknowledged), counted the same way
    sent: tuple[tuple[str, int], ...] = ()
    cache: tuple[tuple[str, int], ...] = ()  #: endpoint, bytes in its tensor cache
    gpu_procs: tuple[tuple[str, float], ...] = ()  #: endpoint, GPU memory MiB (NVML)
    rpc: tuple[RpcCounts, ...] = ()  #: where the breakdown counts the servers' commands
    #: the "now N" requests this reading answers (read after they arrived): the profiler's
    #: boundaries between measured repetitions
    marks: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoadProgress(Event):
    """How far a server's share of the weights has arrived; endpoint "" is the client's dots."""

    node: str = ""
    endpoint: str = ""
    done_bytes: int = 0
    expected_bytes: int = 0
    percent: float = 0.0
    rate_bytes_per_s: float = 0.0
    eta_s: float | None = None
    source: str = ""  #: network (its port's counters), memory (its growth), client, dots


@dataclass(frozen=True)
class LoadFinished(Event):
    node: str = ""
    endpoint: str = ""
    step: int = 0
    seconds: float = 0.0
    moved_bytes: int = 0
    expected_bytes: int = 0
    rate_bytes_per_s: float = 0.0


@dataclass(frozen=True)
class OomRisk(Event):
    """A node about to run out of memory: before loading (predicted) or while running."""

    node: str = ""
    kind: Literal["", "predicted", "threshold", "trend"] = ""
    memory: str = ""  #: RAM, VRAM, GTT+RAM, budget, or "VRAM <gpu>" for a live warning
    used_mib: float = 0.0
    total_mib: float = 0.0
    need_mib: float = 0.0
    holder: str = ""  #: the process (server endpoint) holding the most memory there
    message: str = ""


@dataclass(frozen=True)
class MemoryDistribution(Event):
    """After loading: where the memory went, per server (seed 000's "cluster1: 10577 M")."""

    step: int = 0
    rows: tuple[DistributionRow, ...] = ()


# -- the memory plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BufferPlanned(Event):
    """The memory plan made before launch: what each device is predicted to hold."""

    flavour: str = ""
    n_ctx: int = 0
    headroom_mib: float = 0.0
    rows: tuple[PlannedRow, ...] = ()
    #: device ("CPU" for the main node's), estimated compute buffer MiB
    compute: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class PlanChecked(Event):
    """After a job step: the plan next to what llama.cpp allocated, per device."""

    step: int = 0
    rows: tuple[CheckedRow, ...] = ()
    worst_error_mib: float = 0.0
    compute: tuple[ComputeChecked, ...] = ()  #: compute is estimated: kept apart
    compute_worst_pct: float = 0.0


# -- the profiler -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkMeasured(Event):
    """The main node against one server node, over a plain TCP connection to where that node's
    rpc-server listens (the path RPC takes): round trips and throughput both ways."""

    node: str = ""  #: the server node
    main: str = ""
    endpoint: str = ""  #: host:port connected to (the first server's, or a free port beside it)
    rtt_ms: float | None = None  #: median of the round trips after the first two
    rtt_min_ms: float | None = None
    rtt_max_ms: float | None = None
    to_mbps: float | None = None  #: main -> node, measured where the bytes arrive
    from_mbps: float | None = None  #: node -> main
    seconds: float = 0.0  #: each way
    interface: str = ""  #: the node's interface towards the main node, as its probe found
    link_mbps: int | None = None  #: its negotiated speed
    mtu: int | None = None
    main_interface: str = ""
    main_link_mbps: int | None = None
    main_mtu: int | None = None
    note: str = ""  #: why a figure is missing, or the port used instead of the server's


@dataclass(frozen=True)
class LinksAssessed(Event):
    """After a link test: the links that fall well short of their peers or their speed."""

    flags: tuple[tuple[str, str], ...] = ()  #: node, what is wrong


@dataclass(frozen=True)
class TokenBreakdown(Event):
    """Where one bench test's time per token went: each server's compute, each link's latency
    and transfer, and the rest (the main node's own compute and overhead)."""

    step: int = 0
    test: str = ""  #: as llama-bench names it: pp512, tg128
    phase: Literal["", "prompt", "generation"] = ""
    tokens: int = 0  #: tokens in the measured windows
    ms_per_token: float = 0.0  #: measured (llama-bench's average)
    parts: tuple[BreakdownPart, ...] = ()
    main_ms: float = 0.0  #: what the parts leave: the main node's compute and overhead
    bottleneck: str = ""  #: the largest share, in words
    bottleneck_ms: float = 0.0
    #: figure -> where it came from (round trips: "rpc-server debug log", ...)
    sources: tuple[tuple[str, str], ...] = ()


class TunedSetup(NamedTuple):
    """One setup the tuner benched: its t/s over every repetition it got."""

    name: str
    n_servers: int
    mean_ts: float
    sd_ts: float
    samples: int
    final: bool  #: re-run with more repetitions as one of the best few
    steps: tuple[int, ...]  #: the run's steps that benched it


@dataclass(frozen=True)
class TuneFinished(Event):
    """The tuner's verdict: the fastest setup, its margin over the profile as written, and what
    each server adds or costs."""

    test: str = ""  #: the test ranked on (tg128, pp512)
    setups: tuple[TunedSetup, ...] = ()
    untried: int = 0  #: setups that fit but the budget left no time for
    winner: str = ""
    margin: float = 0.0  #: the winner's gain over the profile as written (0.12: 12 % faster)
    noise: float = 0.0  #: the gain's standard error, as a fraction of the baseline
    #: server (node:port), t/s it adds (negative: costs) as the k-th server
    node_worth: tuple[tuple[str, float], ...] = ()
    written: str = ""  #: the profile the winner was written to
    seconds: float = 0.0


# -- provisioning -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelPush(Event):
    """`rpctui models push` (or a run with push_model): one model file to one node."""

    node: str = ""
    path: str = ""  #: where it goes on the node
    state: Literal["checking", "skipped", "sending", "sent", "failed"] = "checking"
    done_bytes: int = 0
    total_bytes: int = 0
    rate_bytes_per_s: float = 0.0
    how: str = ""  #: "tcp" (a direct stream), "sftp" (over the SSH connection) or "copy"
    message: str = ""


@dataclass(frozen=True)
class CacheFilled(Event):
    """A server's tensor cache filled from a copy of the model on its node (cache_fill), and
    kept within its limit (cache_limit_gib)."""

    node: str = ""
    endpoint: str = ""
    tensors: int = 0  #: the tensors the client will send it that the cache can hold
    present: int = 0  #: of those, already in its cache
    filled: int = 0  #: written now
    bytes: int = 0  #: written now
    seconds: float = 0.0
    cache_bytes: int = 0  #: the cache folder's size after
    pruned_bytes: int = 0  #: removed to keep it within its limit
    message: str = ""


@dataclass(frozen=True)
class BuildProgress(Event):
    """`rpctui build PROFILE`: a step of one node's build."""

    node: str = ""
    step: int = 0
    total: int = 0  #: 0 while not known
    message: str = ""


@dataclass(frozen=True)
class CacheUsed(Event):
    """After a job: what its load found in a tensor cache (-c) folder."""

    node: str = ""
    endpoints: tuple[str, ...] = ()  #: the server, or the servers sharing the folder
    weights: int = 0  #: the planned weights the client sends it by hash first; -1: not known
    found: int = 0  #: of those, found in the cache (the rest it sent whole); -1: not known
    written: int = 0  #: files the load added to the cache (weights and, b6110/ik, activations)
    written_bytes: int = 0
    cache_bytes: int = 0  #: the cache folder's size after the job


@dataclass(frozen=True)
class NodeBuilt(Event):
    """`rpctui build PROFILE`: a node has its build (built there, copied, or there already)."""

    node: str = ""
    flavour: str = ""
    key: str = ""
    how: str = ""  #: "built", "copied from NODE" or "up to date"
    backend: str = ""
    #: what the build records (commit, number, backend, RPC protocol, compiler, arch, libc,
    #: version)
    record: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    message: str = ""  #: where it is


@dataclass(frozen=True)
class Finding(Event):
    """`rpctui doctor`: one check on one node, passed or not, and the fix."""

    check: str = ""  #: build, model copy, reach, clock
    node: str = ""
    ok: bool = True
    message: str = ""
    fix: str = ""
    fixable: bool = False  #: doctor --fix does it
