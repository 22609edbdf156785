"""ClusterState and the pure fold(state, event) -> state.

Renderers (the headless printer, the TUI) draw a ClusterState; they never ask a
node anything. Replaying a recorded run folds the same events into the same
state. ``fold`` never mutates its input: it returns a new state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import singledispatch
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from rpctui.run import events as ev

TAIL_LINES = 20


NodeStatus = Literal["pending", "connecting", "connected", "probed", "failed"]
ServerStatus = Literal["planned", "starting", "ready", "stopped", "failed"]
JobStatus = Literal["idle", "running", "done", "failed"]
TeardownStatus = Literal["", "running", "done", "failed"]


@dataclass(frozen=True)
class NodeState:
    name: str
    status: NodeStatus = "pending"
    message: str = ""
    fix: str = ""
    hostname: str = ""
    flavour: str = ""
    build: str = ""
    protocol: str = ""
    devices: tuple[ev.DeviceInfo, ...] = ()
    mem_total_mib: int | None = None
    mem_available_mib: int | None = None


@dataclass(frozen=True)
class ServerState:
    node: str
    endpoint: str
    status: ServerStatus = "planned"
    pgid: int | None = None
    protocol: str = ""
    devices: tuple[str, ...] = ()
    cache_dir: str = ""
    exposed: bool = False
    rc: int | None = None
    tail: tuple[str, ...] = ()
    ready_s: float | None = None
    transport: str = "tcp"  #: "ssh": reached through an SSH forward to its node's 127.0.0.1


@dataclass(frozen=True)
class JobState:
    status: JobStatus = "idle"
    kind: str = ""
    argv: tuple[str, ...] = ()
    step: int = 0
    servers: tuple[str, ...] = ()
    setup: str = ""
    rc: int | None = None
    elapsed_s: float | None = None
    diagnosis: str = ""
    culprit: str = ""


HISTORY = 240  #: samples kept per node for sparklines and plots (2 minutes at 2 Hz)


class HistoryPoint(NamedTuple):
    """One point of a node's recent past, for sparklines and plots."""

    t: float
    used_mib: float
    rx_per_s: float
    tx_per_s: float


@dataclass(frozen=True)
class NodeTelemetry:
    """What the sampler says about a node, with rates and peaks derived from the readings."""

    node: str
    sample: ev.NodeSample | None = None
    rx_bytes_per_s: float = 0.0
    tx_bytes_per_s: float = 0.0
    used_mib: float | None = None  #: RAM in use (total - available)
    peak_used_mib: float = 0.0
    peak_gpu_mib: float = 0.0
    procs_mib: float = 0.0  #: resident memory of the servers rpctui started there
    peak_procs_mib: float = 0.0
    history: tuple[HistoryPoint, ...] = ()


def _counters(sample: ev.NodeSample, loopback: bool) -> tuple[int, int]:
    rows = [(rx, tx) for name, rx, tx in sample.net if (name == "lo") == loopback]
    return sum(r for r, _ in rows), sum(t for _, t in rows)


def net_rates(old: ev.NodeSample, new: ev.NodeSample) -> tuple[float, float]:
    """rx, tx bytes/s over the node's real interfaces; loopback when nothing else moved
    (servers and client on one machine talk over lo)."""
    dt = new.t - old.t
    if dt <= 0:
        return 0.0, 0.0
    for loopback in (False, True):
        (rx0, tx0), (rx1, tx1) = _counters(old, loopback), _counters(new, loopback)
        if rx1 != rx0 or tx1 != tx0:
            return max(0, rx1 - rx0) / dt, max(0, tx1 - tx0) / dt
    return 0.0, 0.0


def telemetry_after(old: NodeTelemetry, e: ev.NodeSample) -> NodeTelemetry:
    rx_rate, tx_rate = net_rates(old.sample, e) if old.sample is not None else (0.0, 0.0)
    used = (e.mem_total_mib - e.mem_available_mib
            if e.mem_total_mib is not None and e.mem_available_mib is not None else None)
    gpu = sum(g.vram_used_mib or 0 for g in e.gpus)
    procs = sum(p.rss_mib for p in e.procs)
    point = HistoryPoint(e.t, used or 0.0, rx_rate, tx_rate)
    return replace(old, sample=e, rx_bytes_per_s=rx_rate, tx_bytes_per_s=tx_rate, used_mib=used,
                   peak_used_mib=max(old.peak_used_mib, used or 0.0),
                   peak_gpu_mib=max(old.peak_gpu_mib, gpu), procs_mib=procs,
                   peak_procs_mib=max(old.peak_procs_mib, procs),
                   history=(old.history + (point,))[-HISTORY:])


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


@dataclass(frozen=True)
class ClusterState:
    run_id: str = ""
    profile: str = ""
    main: str = ""
    t: float = 0.0
    nodes: Mapping[str, NodeState] = field(default_factory=lambda: _frozen({}))
    servers: Mapping[str, ServerState] = field(default_factory=lambda: _frozen({}))
    job: JobState = field(default_factory=JobState)
    jobs: tuple[JobState, ...] = ()  #: finished jobs, one per sweep step
    results: tuple[ev.BenchResult, ...] = ()
    buffers: tuple[ev.BufferAllocated, ...] = ()
    issues: tuple[ev.PreflightIssue, ...] = ()
    notices: tuple[str, ...] = ()
    preflight_ok: bool | None = None
    telemetry: Mapping[str, NodeTelemetry] = field(default_factory=lambda: _frozen({}))
    loads: Mapping[str, ev.LoadProgress] = field(default_factory=lambda: _frozen({}))
    loads_finished: tuple[ev.LoadFinished, ...] = ()
    warnings: tuple[ev.OomRisk, ...] = ()
    distributions: tuple[ev.MemoryDistribution, ...] = ()
    plan: ev.BufferPlanned | None = None
    plan_checks: tuple[ev.PlanChecked, ...] = ()
    links: Mapping[str, ev.LinkMeasured] = field(default_factory=lambda: _frozen({}))
    link_flags: tuple[tuple[str, str], ...] = ()
    breakdowns: tuple[ev.TokenBreakdown, ...] = ()
    tuned: ev.TuneFinished | None = None
    service: ev.ServiceStatus | None = None  #: a server job's latest status
    teardown: TeardownStatus = ""
    teardown_failures: tuple[str, ...] = ()
    finished: bool = False
    exit_code: int | None = None
    message: str = ""

    def with_node(self, name: str, **changes: Any) -> ClusterState:
        nodes = dict(self.nodes)
        nodes[name] = replace(nodes.get(name) or NodeState(name), **changes)
        return replace(self, nodes=_frozen(nodes))

    def with_server(self, node: str, endpoint: str, **changes: Any) -> ClusterState:
        servers = dict(self.servers)
        servers[endpoint] = replace(servers.get(endpoint) or ServerState(node, endpoint), **changes)
        return replace(self, servers=_frozen(servers))


def fold(state: ClusterState, event: ev.Event) -> ClusterState:
    """The state after ``event``."""
    return _apply(event, replace(state, t=max(state.t, event.t)))


def fold_all(events: list[ev.Event], state: ClusterState | None = None) -> ClusterState:
    state = state or ClusterState()
    for event in events:
        state = fold(state, event)
    return state


@singledispatch
def _apply(event: ev.Event, s: ClusterState) -> ClusterState:
    return s


@_apply.register
def _(e: ev.RunStarted, s: ClusterState) -> ClusterState:
    s = replace(s, run_id=e.run_id, profile=e.profile_name or e.profile, main=e.main)
    for name in e.nodes:
        s = s.with_node(name)
    # Every configured server from the start ("planned"), so a view shows what starting does.
    for label, ep in zip(e.servers, e.endpoints, strict=False):  # older recordings: none
        s = s.with_server(label.rsplit(":", 1)[0], ep)
    return s


@_apply.register
def _(e: ev.NodeConnecting, s: ClusterState) -> ClusterState:
    return s.with_node(e.node, status="connecting")


@_apply.register
def _(e: ev.NodeConnected, s: ClusterState) -> ClusterState:
    return s.with_node(e.node, status="connected")


@_apply.register
def _(e: ev.NodeFailed, s: ClusterState) -> ClusterState:
    return s.with_node(e.node, status="failed", message=e.message, fix=e.fix)


@_apply.register
def _(e: ev.NodeProbed, s: ClusterState) -> ClusterState:
    return s.with_node(e.node, status="probed", hostname=e.hostname, flavour=e.flavour,
                       build=e.build, protocol=e.protocol, devices=e.devices,
                       mem_total_mib=e.mem_total_mib, mem_available_mib=e.mem_available_mib)


@_apply.register
def _(e: ev.PreflightIssue, s: ClusterState) -> ClusterState:
    return replace(s, issues=s.issues + (e,))


@_apply.register
def _(e: ev.PreflightDone, s: ClusterState) -> ClusterState:
    return replace(s, preflight_ok=e.ok)


@_apply.register
def _(e: ev.Notice, s: ClusterState) -> ClusterState:
    return replace(s, notices=s.notices + (e.message,))


@_apply.register
def _(e: ev.ServiceStatus, s: ClusterState) -> ClusterState:
    return replace(s, service=e, notices=s.notices + (f"service {e.state}: {e.message}",))


@_apply.register
def _(e: ev.ServerStarting, s: ClusterState) -> ClusterState:
    return s.with_server(e.node, e.endpoint, status="starting", rc=None, tail=(),
                         transport=e.transport)


@_apply.register
def _(e: ev.ServerStarted, s: ClusterState) -> ClusterState:
    return s.with_server(e.node, e.endpoint, pgid=e.pgid)


@_apply.register
def _(e: ev.ServerReady, s: ClusterState) -> ClusterState:
    return s.with_server(e.node, e.endpoint, status="ready", ready_s=e.elapsed_s)


@_apply.register
def _(e: ev.ServerBanner, s: ClusterState) -> ClusterState:
    changes: dict[str, Any] = {}
    if e.protocol:
        changes["protocol"] = e.protocol
    if e.cache_dir:
        changes["cache_dir"] = e.cache_dir
    if e.devices:
        changes["devices"] = e.devices
    if e.exposed:
        changes["exposed"] = True
    return s.with_server(e.node, e.endpoint, **changes)


@_apply.register
def _(e: ev.ServerLog, s: ClusterState) -> ClusterState:
    current = s.servers.get(e.endpoint)
    tail = (current.tail if current else ()) + (e.line,)
    return s.with_server(e.node, e.endpoint, tail=tail[-TAIL_LINES:])


@_apply.register
def _(e: ev.ServerExited, s: ClusterState) -> ClusterState:
    return s.with_server(e.node, e.endpoint, status="stopped" if e.expected else "failed",
                         rc=e.rc, tail=e.tail or (s.servers[e.endpoint].tail
                                                  if e.endpoint in s.servers else ()))


@_apply.register
def _(e: ev.JobStarted, s: ClusterState) -> ClusterState:
    return replace(s, job=JobState(status="running", kind=e.kind, argv=e.argv, step=e.step,
                                   servers=e.servers, setup=e.setup), loads=_frozen({}))


@_apply.register
def _(e: ev.BufferAllocated, s: ClusterState) -> ClusterState:
    return replace(s, buffers=s.buffers + (e,))


@_apply.register
def _(e: ev.BenchResult, s: ClusterState) -> ClusterState:
    return replace(s, results=s.results + (e,))


@_apply.register
def _(e: ev.JobFinished, s: ClusterState) -> ClusterState:
    job = replace(s.job, status="done" if e.rc == 0 else "failed", rc=e.rc,
                  elapsed_s=e.elapsed_s, diagnosis=e.diagnosis, culprit=e.culprit)
    return replace(s, job=job, jobs=s.jobs + (job,))


@_apply.register
def _(e: ev.NodeSample, s: ClusterState) -> ClusterState:
    telemetry = dict(s.telemetry)
    telemetry[e.node] = telemetry_after(telemetry.get(e.node) or NodeTelemetry(e.node), e)
    return replace(s, telemetry=_frozen(telemetry))


@_apply.register
def _(e: ev.LoadProgress, s: ClusterState) -> ClusterState:
    loads = dict(s.loads)
    loads[e.endpoint] = e
    return replace(s, loads=_frozen(loads))


@_apply.register
def _(e: ev.LoadFinished, s: ClusterState) -> ClusterState:
    return replace(s, loads_finished=s.loads_finished + (e,))


@_apply.register
def _(e: ev.OomRisk, s: ClusterState) -> ClusterState:
    return replace(s, warnings=s.warnings + (e,))


@_apply.register
def _(e: ev.MemoryDistribution, s: ClusterState) -> ClusterState:
    return replace(s, distributions=s.distributions + (e,))


@_apply.register
def _(e: ev.BufferPlanned, s: ClusterState) -> ClusterState:
    return replace(s, plan=e)


@_apply.register
def _(e: ev.PlanChecked, s: ClusterState) -> ClusterState:
    return replace(s, plan_checks=s.plan_checks + (e,))


@_apply.register
def _(e: ev.LinkMeasured, s: ClusterState) -> ClusterState:
    links = dict(s.links)
    links[e.node] = e
    return replace(s, links=_frozen(links))


@_apply.register
def _(e: ev.LinksAssessed, s: ClusterState) -> ClusterState:
    return replace(s, link_flags=e.flags)


@_apply.register
def _(e: ev.TokenBreakdown, s: ClusterState) -> ClusterState:
    return replace(s, breakdowns=s.breakdowns + (e,))


@_apply.register
def _(e: ev.TuneFinished, s: ClusterState) -> ClusterState:
    return replace(s, tuned=e)


@_apply.register
def _(e: ev.TeardownStarted, s: ClusterState) -> ClusterState:
    return replace(s, teardown="running")


@_apply.register
def _(e: ev.TeardownFailed, s: ClusterState) -> ClusterState:
    return replace(s, teardown_failures=s.teardown_failures + (f"{e.node}: {e.message}",))


@_apply.register
def _(e: ev.TeardownDone, s: ClusterState) -> ClusterState:
    return replace(s, teardown="failed" if s.teardown_failures else "done")


@_apply.register
def _(e: ev.RunFinished, s: ClusterState) -> ClusterState:
    return replace(s, finished=True, exit_code=e.exit_code, message=e.message)
