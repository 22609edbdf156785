"""Derived facts: load progress, OOM risk and the memory distribution (pure, no I/O).

The Monitor watches the event stream and answers with new events: LoadProgress per server
while weights arrive, LoadFinished with time, bytes and rate, OomRisk before loading (the
client's buffer sizes against the node's free memory of the right kind) and while running
(a node past the threshold, or heading there within a few seconds), and the
MemoryDistribution once a job step is done. Rates and peaks are derived here, never in the
sampler. Memory kinds: VRAM for NVIDIA and discrete AMD GPUs; RAM (which holds GTT) for
AMD APUs, where the model lives in unified memory; RAM for CPU servers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from rpctui.llama.logs import Buffer, add_kv
from rpctui.run import events as ev

MIB = 1024 * 1024
SETTLE_S = 0.25  #: a load's byte count is taken from a sample at least this long after it ends


@dataclass
class _Load:
    node: str
    start_t: float
    base_received: int
    base_rss_mib: float
    base_node_rx: int
    expected_bytes: int = 0
    done_bytes: int = 0
    last_t: float = 0.0
    rate: float = 0.0
    finished: bool = False
    finish_t: float | None = None
    reported: bool = False
    from_plan: bool = False  #: expected_bytes is the plan's until the client's lines arrive


@dataclass
class Monitor:
    endpoints: dict[str, str]  #: endpoint -> node
    devices: dict[str, list[str]] = field(default_factory=dict)  #: endpoint -> device names
    budgets: dict[str, float] = field(default_factory=dict)  #: endpoint -> memory_mib
    main: str = ""
    warn_pct: float = 90.0
    headroom_mib: float = 512.0
    horizon_s: float = 5.0

    def __post_init__(self) -> None:
        self.samples: dict[str, ev.NodeSample] = {}
        self.history: dict[str, deque[tuple[float, float, float]]] = {}
        self.available: dict[str, tuple[float, float]] = {}  # node -> (available, total) MiB
        self.loads: dict[str, _Load] = {}
        self.buffers: dict[tuple[str, str], list[float]] = {}
        self._model_block: dict[tuple[str, str], float] = {}  #: this load's model lines
        #: KV per cache ("", a sliding-window model's "non-SWA" and "SWA", a recurrent state's
        #: "RS"), largest of each
        self._kv_parts: dict[tuple[str, str], dict[str, float]] = {}
        self._last_kind = ""
        self.step = 0
        self.armed: set[tuple[str, str]] = set()
        self.predicted: set[str] = set()
        self.plan: ev.BufferPlanned | None = None

    # -- helpers ------------------------------------------------------------------------------

    def _received(self, endpoint: str) -> int:
        sample = self.samples.get(self.endpoints.get(endpoint, ""))
        return dict(sample.received).get(endpoint, 0) if sample else 0

    def _node_rx(self, node: str) -> int:
        """Bytes received by every interface of the node, loopback included (a server on the
        main node gets its weights over lo)."""
        sample = self.samples.get(node)
        return sum(rx for _, rx, _ in sample.net) if sample else 0

    def _rss(self, endpoint: str) -> float:
        sample = self.samples.get(self.endpoints.get(endpoint, ""))
        if not sample:
            return 0.0
        return next((p.rss_mib for p in sample.procs if p.endpoint == endpoint), 0.0)

    def memory_kind(self, node: str) -> str:
        """Which memory the node's servers fill: VRAM, GTT+RAM (AMD APU) or RAM."""
        names = [d for ep, n in self.endpoints.items() if n == node for d in self.devices.get(ep, [])]
        gpu = [d for d in names if not d.upper().startswith("CPU")]
        if not gpu:
            return "RAM"
        sample = self.samples.get(node)
        if sample:
            amd = [g for g in sample.gpus if g.kind == "amd"]
            # an APU: the GPU maps more system memory (GTT) than it has VRAM
            if amd and all(g.gtt_used_mib is not None and g.gtt_total_mib and g.vram_total_mib
                           and g.gtt_total_mib > g.vram_total_mib for g in amd):
                return "GTT+RAM"
            if sample.gpus:
                return "VRAM"
        return "RAM"

    def free_mib(self, node: str, kind: str) -> tuple[float, float] | None:
        """(free, total) MiB of that memory on the node, from the latest sample or the probe."""
        sample = self.samples.get(node)
        if kind == "VRAM" and sample and sample.gpus:
            used = sum(g.vram_used_mib or 0 for g in sample.gpus)
            total = sum(g.vram_total_mib or 0 for g in sample.gpus)
            return total - used, total
        if sample and sample.mem_available_mib is not None and sample.mem_total_mib:
            return sample.mem_available_mib, sample.mem_total_mib
        return self.available.get(node)

    def _holder(self, node: str) -> str:
        sample = self.samples.get(node)
        if not sample or not sample.procs:
            return ""
        return max(sample.procs, key=lambda p: p.rss_mib).endpoint

    # -- the stream ---------------------------------------------------------------------------

    def pending(self) -> bool:
        """Loads that ended but wait for a later sample to count their bytes."""
        return any(ld.finished and not ld.reported for ld in self.loads.values())

    def observe(self, e: ev.Event) -> list[ev.Event]:
        if isinstance(e, ev.NodeProbed) and e.mem_available_mib is not None and e.mem_total_mib:
            self.available[e.node] = (float(e.mem_available_mib), float(e.mem_total_mib))
        elif isinstance(e, ev.BufferPlanned):
            self.plan = e
        elif isinstance(e, ev.JobStarted):
            return self._job_started(e)
        elif isinstance(e, ev.BufferAllocated):
            return self._buffer(e)
        elif isinstance(e, ev.NodeSample):
            return self._sample(e)
        elif isinstance(e, ev.JobFinished):
            return self._job_finished(e)
        elif isinstance(e, ev.TeardownStarted):
            # No sample will come any more: report what is pending with what is known.
            return [self._finished(ep, ld) for ep, ld in self.loads.items()
                    if ld.finished and not ld.reported]
        return []

    def _job_started(self, e: ev.JobStarted) -> list[ev.Event]:
        self.step = e.step
        self.buffers, self._model_block, self._last_kind = {}, {}, ""
        self._kv_parts = {}
        self.predicted = set()
        self.loads = {ep: _Load(self.endpoints.get(ep, ""), e.t, self._received(ep), self._rss(ep),
                                self._node_rx(self.endpoints.get(ep, "")), last_t=e.t)
                      for ep in e.servers}
        if self.plan is not None and len(e.servers) == len(self.endpoints):
            # The plan knows each server's share before the client prints it.
            for ep, load in self.loads.items():
                mib = sum(row.model_mib for row in self.plan.rows
                          if row.device.endswith(f"[{ep}]"))
                if mib:
                    load.expected_bytes, load.from_plan = int(mib * MIB), True
        return []

    def _buffer(self, e: ev.BufferAllocated) -> list[ev.Event]:
        key = (e.endpoint or e.device, e.device)
        sizes = self.buffers.setdefault(key, [0.0, 0.0, 0.0])
        # A bench re-allocates KV and compute buffers per test: keep the largest of each.
        # One load prints its model buffers together, the host's once per shard of a split
        # model: those add up.
        i = ("model", "kv", "compute").index(e.kind)
        if e.kind == "model":
            if self._last_kind != "model":
                self._model_block = {}
            self._model_block[key] = self._model_block.get(key, 0.0) + e.mib
            sizes[0] = max(sizes[0], self._model_block[key])
        elif e.kind == "kv":
            # A sliding-window model's device holds two caches, each printed on its own line.
            sizes[1] = add_kv(self._kv_parts.setdefault(key, {}),
                              Buffer(e.kind, e.device, e.mib, e.cache))
        else:
            sizes[i] = max(sizes[i], e.mib)
        self._last_kind = e.kind
        out: list[ev.Event] = []
        load = self.loads.get(e.endpoint)
        if e.kind == "model" and load is not None:
            if load.from_plan:  # the client's own figure replaces the plan's
                load.expected_bytes, load.from_plan = 0, False
            load.expected_bytes += int(e.mib * MIB)
            out += self._predict(load.node, e.t)
        elif e.kind == "kv":
            # The KV cache is allocated once every weight has been sent: loading is over.
            out += self._finish_all(e.t)
        return out

    def _predict(self, node: str, t: float) -> list[ev.Event]:
        if node in self.predicted:
            return []
        for ep, load in self.loads.items():
            budget = self.budgets.get(ep)
            if load.node == node and budget and load.expected_bytes / MIB > budget:
                self.predicted.add(node)
                need = load.expected_bytes / MIB
                return [ev.OomRisk(t=t, node=node, kind="predicted", memory="budget",
                                   used_mib=0.0, total_mib=budget, need_mib=round(need, 1),
                                   holder=ep, message=f"server {ep} on node {node} is about to "
                                   f"receive {need:.0f} MiB, over its {budget:.0f} MiB budget")]
        need = sum(ld.expected_bytes for ld in self.loads.values() if ld.node == node) / MIB
        kind = self.memory_kind(node)
        free = self.free_mib(node, kind)
        if free is None or need <= free[0] - self.headroom_mib:
            return []
        self.predicted.add(node)
        return [ev.OomRisk(t=t, node=node, kind="predicted", memory=kind,
                           used_mib=round(free[1] - free[0], 1), total_mib=round(free[1], 1),
                           need_mib=round(need, 1),
                           message=f"node {node} is about to receive {need:.0f} MiB but has "
                                   f"{free[0]:.0f} MiB of {kind} free ({self.headroom_mib:.0f} "
                                   f"MiB headroom): it will likely run out of memory")]

    def _sample(self, e: ev.NodeSample) -> list[ev.Event]:
        self.samples[e.node] = e
        out: list[ev.Event] = []
        for ep, load in self.loads.items():
            if load.node == e.node and not load.finished and load.expected_bytes:
                out += self._progress(ep, load, e.t)
            elif (load.node == e.node and load.finished and not load.reported
                  and load.finish_t is not None and e.t >= load.finish_t + SETTLE_S):
                out.append(self._finished(ep, load))
        out += self._threshold(e)
        return out

    def _progress(self, ep: str, load: _Load, t: float) -> list[ev.Event]:
        net = max(0, self._received(ep) - load.base_received)
        mem = max(0.0, self._rss(ep) - load.base_rss_mib) * MIB
        done = int(max(net, mem))
        source = "network" if net >= mem else "memory"
        if done <= load.done_bytes:
            return []
        dt = t - load.last_t
        if dt > 0:
            instant = (done - load.done_bytes) / dt
            load.rate = instant if load.rate == 0 else 0.5 * load.rate + 0.5 * instant
        load.done_bytes, load.last_t = done, t
        remaining = max(0, load.expected_bytes - done)
        eta = remaining / load.rate if load.rate > 0 else None
        pct = min(99.0, 100.0 * done / load.expected_bytes)
        return [ev.LoadProgress(t=t, node=load.node, endpoint=ep, done_bytes=done,
                                expected_bytes=load.expected_bytes, percent=round(pct, 1),
                                rate_bytes_per_s=round(load.rate), eta_s=round(eta, 1)
                                if eta is not None else None, source=source)]

    def _finish_all(self, t: float) -> list[ev.Event]:
        """Every server's weights have arrived: 100 % now; LoadFinished follows with the node's
        next sample, whose counters cover the whole load."""
        out: list[ev.Event] = []
        for ep, load in self.loads.items():
            if load.finished or not load.expected_bytes:
                continue
            load.finished, load.finish_t = True, t
            out.append(ev.LoadProgress(t=t, node=load.node, endpoint=ep,
                                       done_bytes=load.expected_bytes,
                                       expected_bytes=load.expected_bytes, percent=100.0,
                                       rate_bytes_per_s=round(load.rate), eta_s=0.0,
                                       source="client"))
        return out

    def _finished(self, ep: str, load: _Load) -> ev.LoadFinished:
        """Bytes moved over the network: the node's received bytes during the load (exact,
        never misses a connection), shared among its loading servers by what the kernel's
        per-connection counters saw arrive on each one's port."""
        load.reported = True
        mates = [(e, ld) for e, ld in self.loads.items() if ld.node == load.node]
        reads = {e: max(0, self._received(e) - ld.base_received) for e, ld in mates}
        share = reads[ep] / sum(reads.values()) if sum(reads.values()) else 1 / len(mates)
        moved = int(max(0, self._node_rx(load.node) - load.base_node_rx) * share)
        finish = load.finish_t if load.finish_t is not None else load.last_t
        seconds = max(finish - load.start_t, 1e-6)
        return ev.LoadFinished(t=finish, node=load.node, endpoint=ep, step=self.step,
                               seconds=round(seconds, 3), moved_bytes=moved,
                               expected_bytes=load.expected_bytes,
                               rate_bytes_per_s=round(max(moved, load.expected_bytes) / seconds))

    def _threshold(self, e: ev.NodeSample) -> list[ev.Event]:
        checks: list[tuple[str, float, float]] = []
        if e.mem_total_mib and e.mem_available_mib is not None:
            checks.append(("RAM", e.mem_total_mib - e.mem_available_mib, e.mem_total_mib))
        for g in e.gpus:
            if g.vram_used_mib is not None and g.vram_total_mib:
                checks.append((f"VRAM {g.name}", g.vram_used_mib, g.vram_total_mib))
        out: list[ev.Event] = []
        for memory, used, total in checks:
            key = (e.node, memory)
            hist = self.history.setdefault(f"{e.node}/{memory}", deque(maxlen=6))
            hist.append((e.t, used, total))
            limit = total * self.warn_pct / 100
            if used < limit * 0.95:
                self.armed.discard(key)
            if key in self.armed:
                continue
            kind: Literal["", "threshold", "trend"] = ""
            if used >= limit:
                kind = "threshold"
            elif len(hist) >= 3 and hist[-1][0] - hist[0][0] >= 1.0:
                slope = (hist[-1][1] - hist[0][1]) / (hist[-1][0] - hist[0][0])
                if slope > 0 and used + slope * self.horizon_s >= limit:
                    kind = "trend"
            if not kind:
                continue
            self.armed.add(key)
            holder = self._holder(e.node)
            held = f"; {holder} holds the most" if holder else ""
            when = (f"is at {100 * used / total:.0f}% of its {memory}" if kind == "threshold" else
                    f"will pass {self.warn_pct:.0f}% of its {memory} within "
                    f"{self.horizon_s:.0f} s at this rate")
            out.append(ev.OomRisk(t=e.t, node=e.node, kind=kind, memory=memory,
                                  used_mib=round(used, 1), total_mib=round(total, 1),
                                  holder=holder, message=f"node {e.node} {when} "
                                  f"({used:.0f}/{total:.0f} MiB){held}"))
        return out

    def _job_finished(self, e: ev.JobFinished) -> list[ev.Event]:
        out: list[ev.Event] = []
        if e.rc == 0:
            out += self._finish_all(e.t)
        rows = []
        for (where, device), (model, kv, compute) in sorted(self.buffers.items()):
            node = self.endpoints.get(where, self.main)
            rows.append(ev.DistributionRow(node, device, round(model, 2), round(kv, 2),
                                           round(compute, 2)))
        if rows:
            out.append(ev.MemoryDistribution(t=e.t, step=e.step, rows=tuple(rows)))
        if self.plan is not None and e.rc == 0 and len(self.loads) == len(self.endpoints):
            out.append(self._check_plan(e))
        return out

    def _check_plan(self, e: ev.JobFinished) -> ev.PlanChecked:
        """The plan next to what the client allocated (only for steps that use every server,
        which is what the plan was made for)."""
        assert self.plan is not None
        actual = {device: sizes for (_, device), sizes in self.buffers.items()}
        rows = []
        worst = 0.0
        for device, _node, model, kv, _free, _fits in self.plan.rows:
            got = actual.get(device, [0.0, 0.0, 0.0])
            rows.append(ev.CheckedRow(device, model, round(got[0], 2), kv, round(got[1], 2)))
            worst = max(worst, abs(model - got[0]), abs(kv - got[1]))
        compute, worst_pct = [], 0.0
        for device, est in self.plan.compute:
            allocated = actual.get(device, [0.0, 0.0, 0.0])[2]
            if device == "CPU":  # ik_llama.cpp's host compute on a GPU build: Vulkan_Host
                allocated += sum(v[2] for d, v in actual.items() if d.endswith("_Host"))
            compute.append(ev.ComputeChecked(device, est, round(allocated, 2)))
            if allocated:
                worst_pct = max(worst_pct, 100 * abs(est - allocated) / allocated)
        return ev.PlanChecked(t=e.t, step=e.step, rows=tuple(rows), worst_error_mib=round(worst, 3),
                              compute=tuple(compute), compute_worst_pct=round(worst_pct, 1))
