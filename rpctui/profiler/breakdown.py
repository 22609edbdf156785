"""Where each token's time goes: counters read at the start and end of every measured bench
repetition, the link test's round-trip time and throughput, and llama-bench's own time per
token, combined into one TokenBreakdown per test and phase.

The model is the one llama.cpp's RPC path follows for one token: the main node computes its
layers, then hands the activations to each server in turn, which computes its layers and answers
when asked. So a token's time is the sum, over servers, of the server computing, the round trips
its client waited on (each one the link's round-trip time), and its bytes over the link's
throughput; what the servers do not account for is the main node (its own layers, sampling, and
anything not measured). Pipelined prompt batches can overlap servers; the sum is then an upper
bound, and the rest is floored at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from rpctui.run import events as ev

Phase = Literal["prompt", "generation"]


class Counters(NamedTuple):
    """One server's cumulative figures when a boundary was read."""

    received: int  #: bytes the server received (kernel tcp_info, its port's connections)
    sent: int  #: bytes it sent and were acknowledged
    busiest_s: float  #: its busiest thread's CPU time, summed per sampling interval
    cpu_s: float  #: all its threads' CPU time
    gpu_busy_s: float | None  #: its node's GPU utilisation, integrated over time
    replies: int | None  #: RPC commands it answered (debug log); None when it prints none
    commands: int | None
    payload_to: int = 0  #: tensor bytes set_tensor lines say it received (debug log)
    payload_from: int = 0  #: tensor bytes get_tensor lines say it sent back


@dataclass(frozen=True)
class Window:
    """One measured stretch of a bench job and the tokens processed in it."""

    tokens: int
    start: Mapping[str, Counters]  #: endpoint -> counters
    end: Mapping[str, Counters]


SOURCES = (
    ("ms per token", "llama-bench (avg_ns / tokens)"),
    ("bytes", "rpc-server debug log: set_tensor and get_tensor sizes (tensor data, without "
              "the protocol's headers); without it, kernel tcp_info of the server's "
              "connections (bytes_received, bytes_acked)"),
    ("round trips", "rpc-server debug log (GGML_RPC_DEBUG=1): commands it answered"),
    ("rtt, throughput", "rpctui's link test before the servers started"),
    ("compute", "/proc: the server's busiest thread per sampling interval; NVML/amdgpu "
                "utilisation where the node has GPUs"),
    ("main node", "the measured time less every server's parts"),
)


def _delta(windows: Sequence[Window], endpoint: str) -> Counters | None:
    """The counters' growth over the windows (None when a window lacks the server)."""
    received = sent = payload_to = payload_from = 0
    busiest = cpu = 0.0
    gpu: float | None = 0.0
    replies: int | None = 0
    commands: int | None = 0
    for w in windows:
        a, b = w.start.get(endpoint), w.end.get(endpoint)
        if a is None or b is None:
            return None
        received += max(0, b.received - a.received)
        sent += max(0, b.sent - a.sent)
        payload_to += max(0, b.payload_to - a.payload_to)
        payload_from += max(0, b.payload_from - a.payload_from)
        busiest += max(0.0, b.busiest_s - a.busiest_s)
        cpu += max(0.0, b.cpu_s - a.cpu_s)
        gpu = None if gpu is None or a.gpu_busy_s is None or b.gpu_busy_s is None \
            else gpu + max(0.0, b.gpu_busy_s - a.gpu_busy_s)
        replies = None if replies is None or a.replies is None or b.replies is None \
            else replies + max(0, b.replies - a.replies)
        commands = None if commands is None or a.commands is None or b.commands is None \
            else commands + max(0, b.commands - a.commands)
    if not commands:  # no command lines at all: the build prints none (or debug is off)
        replies = commands = None
    elif payload_to or payload_from:
        # The servers' own account of the tensors moved: the kernel's per-connection counters
        # lose what a connection carried after its last reading when it closes (llama-bench
        # closes them as a test ends), so where the lines say, they are the figure.
        received, sent = payload_to, payload_from
    return Counters(received, sent, busiest, cpu, gpu, replies, commands, payload_to,
                    payload_from)


def _ms(seconds: float, tokens: int) -> float:
    return round(seconds * 1000 / tokens, 4)


def _transfer_ms(nbytes: float, mbps: float | None) -> float | None:
    if not mbps:
        return None
    return nbytes * 8 / (mbps * 1e6) * 1000


def breakdown(step: int, test: str, phase: Phase, ms_per_token: float,
              windows: Sequence[Window], nodes: Mapping[str, str],
              links: Mapping[str, ev.LinkMeasured]) -> ev.TokenBreakdown | None:
    """One test's breakdown from its windows; None when none was measured. ``nodes``:
    endpoint -> node, in --rpc order; ``links``: node -> its link test."""
    tokens = sum(w.tokens for w in windows)
    if not windows or tokens <= 0 or ms_per_token <= 0:
        return None
    parts: list[ev.BreakdownPart] = []
    per_node = {n: list(nodes.values()).count(n) for n in nodes.values()}
    for endpoint, node in nodes.items():
        d = _delta(windows, endpoint)
        if d is None:
            continue
        link = links.get(node)
        rtt = link.rtt_ms if link else None
        to_b, from_b = d.received / tokens, d.sent / tokens
        trips = round(d.replies / tokens, 3) if d.replies is not None else None
        # A node's GPU busy time is the node's: it is a server's own only when the server is
        # alone there (two servers on one GPU would each be given all of it).
        gpu = d.gpu_busy_s if per_node[node] == 1 else None
        compute = max(d.busiest_s, gpu or 0.0)
        latency = round(trips * rtt, 4) if trips is not None and rtt is not None else None
        up = _transfer_ms(to_b, link.to_mbps if link else None)
        down = _transfer_ms(from_b, link.from_mbps if link else None)
        transfer = round(up + down, 4) if up is not None and down is not None else None
        parts.append(ev.BreakdownPart(
            endpoint, node, _ms(compute, tokens), latency, transfer, round(to_b, 1),
            round(from_b, 1), trips, rtt, _ms(d.cpu_s, tokens),
            _ms(d.gpu_busy_s, tokens) if d.gpu_busy_s is not None else None))
    accounted = sum((p.compute_ms or 0) + (p.latency_ms or 0) + (p.transfer_ms or 0)
                    for p in parts)
    main_ms = round(max(0.0, ms_per_token - accounted), 4)
    shares: list[tuple[float, str]] = [(main_ms, "the main node (its own layers and overhead)")]
    for p in parts:
        shares += [(p.compute_ms or 0.0, f"compute on {p.node} ({p.endpoint})"),
                   (p.latency_ms or 0.0, f"latency of the link to {p.node} ({p.round_trips:g} "
                    f"round trips x {p.rtt_ms:.3f} ms)" if p.latency_ms is not None else ""),
                   (p.transfer_ms or 0.0, f"bandwidth of the link to {p.node}")]
    top_ms, top = max(shares, key=lambda s: s[0])
    return ev.TokenBreakdown(step=step, test=test, phase=phase, tokens=tokens,
                             ms_per_token=round(ms_per_token, 4), parts=tuple(parts),
                             main_ms=main_ms, bottleneck=top, bottleneck_ms=round(top_ms, 4),
                             sources=SOURCES)


def predicted_ms(b: ev.TokenBreakdown, rtt_ms: Mapping[str, float],
                 mbps: Mapping[str, tuple[float, float]] | None = None) -> float | None:
    """The time per token this breakdown predicts on links with other round-trip times
    (node -> ms) and throughputs (node -> (to, from) Mb/s): every part kept, each link's
    latency and transfer recomputed. None when a changed link's round trips are unknown."""
    total = b.main_ms
    for p in b.parts:
        total += p.compute_ms or 0.0
        rtt = rtt_ms.get(p.node, p.rtt_ms)
        if p.node in rtt_ms and p.round_trips is None:
            return None
        total += (p.round_trips or 0.0) * (rtt or 0.0)
        if mbps and p.node in mbps:
            to, frm = mbps[p.node]
            total += (_transfer_ms(p.to_bytes, to) or 0.0) + (_transfer_ms(p.from_bytes, frm) or 0.0)
        else:
            total += p.transfer_ms or 0.0
    return round(total, 4)


def render(breakdowns: Sequence[ev.TokenBreakdown]) -> list[str]:
    """Text lines: per test, the measured time and each part, then the bottleneck."""
    out: list[str] = []
    for b in breakdowns:
        out.append(f"{b.test} ({b.phase}, {b.tokens} tokens measured): {b.ms_per_token:.3f} ms "
                   f"per token; bottleneck: {b.bottleneck} ({b.bottleneck_ms:.3f} ms)")
        for p in b.parts:
            def f(v: float | None, spec: str = ".3f") -> str:
                return "?" if v is None else format(v, spec)
            out.append(f"  {p.node} {p.endpoint}: compute {f(p.compute_ms)} ms, latency "
                       f"{f(p.latency_ms)} ms ({f(p.round_trips, 'g')} round trips x "
                       f"{f(p.rtt_ms)} ms), transfer {f(p.transfer_ms)} ms "
                       f"({p.to_bytes:.0f} B to, {p.from_bytes:.0f} B from)")
        out.append(f"  main node and the rest: {b.main_ms:.3f} ms")
    return out
