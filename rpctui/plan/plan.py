"""The memory plan of a profile: devices in the client's order with their free memory (from
the probe), the model's placement on them, a verdict per node, and a split that fits.

Used by ``rpctui plan`` and by the preflight of ``check`` and ``run``, which refuse a plan
that does not fit unless forced. Predicts the placement of the build the profile runs:
mainline's rule (rpctui.plan.placement, seed-era included) or ik_llama.cpp's
(rpctui.plan.ik).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rpctui.errors import UserError
from rpctui.llama import argv as largv
from rpctui.llama.caps import Capabilities
from rpctui.plan.compute import (
    MARGIN,
    PAD_MIB,
    backend_of,
    default_flash_attn,
    doubt,
    error_of,
    estimate_mib,
    family,
    padded_ctx,
    pipeline_parallel,
    reserve_tokens,
)
from rpctui.plan.gguf import DELTA_NET_ARCHS, UNMODELLED_STATE, ModelInfo
from rpctui.plan.ik import IkRule
from rpctui.plan.kernels import flash_attention, ik_fused_ops, scan_kernels
from rpctui.plan.kv import PATTERNS, KvLayout, layout
from rpctui.plan.placement import (
    _EXPERT,
    MIB,
    Device,
    Placement,
    fill,
    layer_devices,
    offloaded,
    split_margin,
    state_bytes,
    suggest_expert_overrides,
    suggest_split,
)
from rpctui.profile.schema import Profile, endpoint

#: a default-split boundary closer than this (share of the layers) to a layer is fragile
EDGE = 0.002


@dataclass
class Plan:
    model: ModelInfo
    devices: list[Device]
    placement: Placement
    n_ctx: int
    headroom_mib: float
    flavour: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    fits: bool = True
    suggested_split: list[float] = field(default_factory=list)
    suggested_fits: bool | None = None
    suggested_fill: float | None = None  #: the fullest device's share of its room
    #: -ot rules for a mixture of experts: (pattern, node:port of the server)
    suggested_overrides: list[tuple[str, str]] | None = None
    notes: list[str] = field(default_factory=list)
    #: what will fail at run time: (message, fix)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.path, "arch": self.model.arch, "n_layer": self.model.n_layer,
                "model_mib": round(self.model.size_bytes / MIB, 2), "n_ctx": self.n_ctx,
                "flavour": self.flavour, "notes": self.notes,
                "warnings": [{"message": m, "fix": f} for m, f in self.warnings],
                "headroom_mib": self.headroom_mib, "devices": self.rows, "fits": self.fits,
                "suggested_tensor_split": self.suggested_split,
                "suggested_fits": self.suggested_fits, "suggested_fill": self.suggested_fill,
                "suggested_override_tensors": [{"pattern": p, "server": s} for p, s in
                                               self.suggested_overrides or []]}


def graph_shape(profile: Profile, flavour: str = "mainline", n_ctx_train: int = 0,
                recurrent_only: bool = False) -> tuple[int, int, bool]:
    """(n_ctx, T, flash attention) of the job's largest context: the KV cells each device
    holds (padded as the build pads them) and the micro-batch of the worst-case graph its
    compute buffers are sized for. Without -c, mainline and ik_llama.cpp take the model's
    trained context, seed-era builds 4096."""
    job = profile.job
    fa = job.flash_attn if job.flash_attn is not None else default_flash_attn(flavour)
    if job.kind != "bench" or job.ctx_size:
        asked = job.ctx_size or (n_ctx_train if flavour != "seed-era" and n_ctx_train else 4096)
        n_ctx = padded_ctx(flavour, asked, fa, recurrent_only)
        return n_ctx, reserve_tokens(flavour, asked, n_ctx, job.ubatch_size, job.batch_size), fa
    # llama-bench runs prompt and generation as separate tests, each with its own context:
    # the largest is what a device must hold (ik_llama.cpp's has no depth).
    prompt, gen, depth = max(job.prompt_tokens or [512]), max(job.gen_tokens or [128]), max(
        job.depth or [0])
    n = max(prompt, gen) + (0 if flavour == "ik" else depth)
    n_ctx = padded_ctx(flavour, n, fa, recurrent_only)
    return n_ctx, reserve_tokens(flavour, n, n_ctx, job.ubatch_size, job.batch_size), fa


def devices_for(profile: Profile, caps: dict[str, Capabilities]) -> list[Device]:
    """The client's device order: each server's devices in --rpc order, then the main node's
    local GPUs, with the free memory each reports."""
    main = caps[profile.main_node.label]
    out: list[Device] = []
    for node, server in profile.servers():
        c = caps[node.label]
        names = server.devices or ([c.devices[0].name] if c.devices else ["CPU"])
        if main.flavour == "ik":
            names = names[:1]  # its clients name one device per server (host:port|0)
        for i, name in enumerate(names):
            dev = next((d for d in c.devices if d.name == name), None)
            free = float(dev.free_mib) if dev and dev.free_mib is not None else float(
                c.mem_available_mib or 0)
            total = float(dev.total_mib) if dev and dev.total_mib is not None else None
            usable = min(free, float(server.memory_mib)) if server.memory_mib else free
            out.append(Device(largv.rpc_buffer(main, endpoint(node, server), i), node.label,
                              usable, total, reported_mib=free, backend=backend_of(name)))
    for d in main.client_devices:
        out.append(Device(d.name, profile.main_node.label, float(d.free_mib or 0),
                          float(d.total_mib) if d.total_mib else None,
                          backend=backend_of(d.name)))
    return out


def kv_layout(profile: Profile, flavour: str, model: ModelInfo, n_ctx: int, tokens: int,
              fa: bool) -> KvLayout:
    """Each layer's KV cells for this job: micro-batches of ``tokens`` (the graph's T is
    n_ubatch), the job's parallel sequences (-np, -kvu): current mainline's llama-server runs
    4 sequences in one unified cache unless told otherwise."""
    extra = profile.job.extra_args
    seqs, unified = 1, "-kvu" in extra or "--kv-unified" in extra
    for flag in ("-np", "--parallel"):
        if flag in extra[:-1] and extra[extra.index(flag) + 1].isdigit():
            seqs = max(1, int(extra[extra.index(flag) + 1]))
    if (profile.job.kind == "server" and flavour == "mainline"
            and not {"-np", "--parallel"} & set(extra)):
        seqs, unified = 4, True
    return layout(model, flavour, n_ctx, tokens, seqs, unified, fa,
                  "-swa-full" in extra or "--swa-full" in extra)


def expert_layers_of(name: str) -> bool:
    return _EXPERT.match(name) is not None


def make_plan(profile: Profile, caps: dict[str, Capabilities], model: ModelInfo,
              tensor_split: list[float] | None = None,
              experts_on: list[str] | None = None) -> Plan:
    devices = devices_for(profile, caps)
    main = caps[profile.main_node.label]
    job = profile.job
    if model.mla and main.flavour == "mainline":
        model = dataclasses.replace(model, v_cache=False)  # its MLA cache is K only
    eps = {f"{n.label}:{s.port}": endpoint(n, s) for n, s in profile.servers()}
    overrides = [(r.pattern, r.buffer if r.buffer else largv.rpc_buffer(main, eps[str(r.server)],
                                                                         r.device))
                 for r in job.override_tensors if r.server is None or r.server in eps]
    split = tensor_split if tensor_split is not None else (job.tensor_split or None)
    types = (job.cache_type_k or "f16", job.cache_type_v or "f16")
    ik = IkRule(profile, main, model, devices) if main.flavour == "ik" else None

    n_ctx, tokens, fa = graph_shape(profile, main.flavour, model.n_ctx_train,
                                    len(model.recurrent_layers) == model.n_layer > 0)
    all_offloaded = job.ngl is None or job.ngl < 0 or job.ngl > model.n_layer

    def placed(ts: list[float] | None, rules: list[tuple[str, str]] | None,
               of: ModelInfo = model) -> Placement:
        where = (ik.layer_devices(ts) if ik else
                 layer_devices(model.n_layer, devices, job.ngl, ts, main.flavour))
        pp = pipeline_parallel(main.flavour, len(devices), all_offloaded, bool(rules),
                               not {"-nkvo", "--no-kv-offload"} & set(job.extra_args))
        kv = kv_layout(profile, main.flavour, model, n_ctx, tokens, fa)
        placed = fill(of, where, rules, n_ctx, types, mmap=job.mmap is not False,
                      backends={d.name: d.backend for d in devices}, kv=kv)
        # the graph attends over one stream (a sequence's cells, unless the cache is unified)
        return with_compute(placed, model, main.flavour, tokens, kv.full // kv.streams, fa, pp,
                            kv.swa // kv.streams if kv.swa_layers else 0, kv.streams)

    placement = placed(split, overrides)
    fa_note = flash_attention(job.flash_attn, main.flavour, model, devices, placement)
    if fa_note and fa_note[0] != fa:  # "auto" resolves otherwise: estimate for that
        fa = fa_note[0]
        placement = placed(split, overrides)
    plan = Plan(model, devices, placement, n_ctx, profile.headroom_mib, main.flavour)
    if fa_note and fa_note[2]:
        plan.warnings.append((fa_note[1], "set flash_attn = false in [job]"))
    elif fa_note:
        plan.notes.append(fa_note[1])
    fused = ik_fused_ops(model, devices, placement, main.flavour, job.kind, job.extra_args)
    if fused:
        plan.warnings.append(fused)
    scan = scan_kernels(model, devices, placement)
    if scan and scan[1]:
        plan.warnings.append((scan[0], "give those layers to a server of another backend "
                                       "(tensor_split), or run that server on its CPU"))
    elif scan:
        plan.notes.append(scan[0])
    plan.rows, plan.fits = _rows(devices, placement, profile.headroom_mib)
    if ik:
        plan.notes += ik.notes(placement)
    plan.notes.append(_compute_note(main.flavour, fa, tokens, placement.pipeline,
                                    family(model)))
    if placement.compute_high:
        plan.notes.append(f"compute buffers of {', '.join(sorted(placement.compute_high))} "
                          f"are estimated high: they hold only recurrent layers of this hybrid "
                          f"model, and the rule was fitted on devices that held an attention "
                          f"layer too (such a device allocated less than half on an H200)")
    if placement.compute_doubts:
        device, why = next(iter(placement.compute_doubts.items()))
        plan.notes.append(f"compute buffers of {', '.join(placement.compute_doubts)} are "
                          f"outside the rule's data ({device}: {why}): each estimate has "
                          f"{100 * MARGIN:.0f} % added; keep headroom")
    kv = kv_layout(profile, main.flavour, model, n_ctx, tokens, fa)
    if kv.swa_layers:
        plan.notes.append(f"sliding window: {len(kv.swa_layers)} of {model.n_layer} layers "
                          f"keep a KV cache of {kv.swa} cells, the others {kv.full}")
    elif model.n_swa and model.arch not in PATTERNS:
        plan.notes.append(f"{model.arch} has a sliding window, which the planner does not "
                          f"model for it: its KV is planned as if every layer kept the whole "
                          f"context (more than the build allocates)")
    plan.notes += _state_notes(model, main.flavour, kv)
    if not ik and not (split and any(split)) and split_margin(
            model.n_layer, [d.split_weight for d in devices], job.ngl) < EDGE:
        plan.notes.append("the default split (by free memory) has a layer boundary on a knife "
                          "edge: a change of a few MiB of free memory at load moves a layer to "
                          "the next device; set tensor_split (rpctui plan --apply) to pin it")
    if tensor_split is None and not overrides:
        order = ik.raw if ik else devices
        pools = {d.name: len(ds) for ds in shared_ram(devices).values() for d in ds}
        # servers sharing a node's RAM each get their share of it (and headroom)
        room = [min(d.free_mib, d.split_weight / pools.get(d.name, 1)) - profile.headroom_mib
                for d in order]
        # each device reserves a compute buffer; the last one also the output's
        fixed = [0.0 if d.name == "CPU" else estimate_mib(
            model, main.flavour, tokens, n_ctx, fa, "output" if i == len(order) - 1
            else "layers", placement.pipeline, kv.swa if kv.swa_layers else 0) or 0.0
            for i, d in enumerate(order)]
        counts, plan.suggested_fill = suggest_split(
            model, room, n_ctx, types, fixed, offloaded(model.n_layer, job.ngl, main.flavour),
            kv_layout(profile, main.flavour, model, n_ctx, tokens, fa))
        plan.suggested_split = ik.split_for(counts) if ik else counts
        again = placed(plan.suggested_split, overrides)
        plan.suggested_fits = _rows(devices, again, profile.headroom_mib)[1]
    if experts_on:
        _suggest_experts(plan, profile, main, model, devices, experts_on, eps, split, placed)
    return plan


def _state_notes(model: ModelInfo, flavour: str, kv: KvLayout) -> list[str]:
    """What the plan says of a recurrent model's state."""
    if model.arch in UNMODELLED_STATE:
        return [f"{model.arch} keeps a recurrent state, which the planner does not model: its "
                f"KV column may be off in either direction; keep headroom"]
    if not model.recurrent_layers or model.ssm is None:
        return []
    per_layer = state_bytes(model, min(model.recurrent_layers), kv.seqs) / MIB
    kind = "gated delta net" if model.arch in DELTA_NET_ARCHS else "Mamba-style"
    notes = [f"recurrent state: {len(model.recurrent_layers)} of {model.n_layer} layers keep "
             f"a {kind} state ({per_layer:.2f} MiB each for {kv.seqs} "
             f"sequence{'s' if kv.seqs > 1 else ''}) in place of a KV cache; the KV column "
             f"counts it"]
    if flavour == "ik" and model.arch not in DELTA_NET_ARCHS:  # its Qwen3-Next's was
        notes.append("ik_llama.cpp's recurrent state was not checked against its loads: it is "
                     "planned as mainline keeps it")
    return notes


def with_compute(p: Placement, model: ModelInfo, flavour: str, tokens: int, n_ctx: int,
                 fa: bool, pipeline: bool = False, swa_cells: int = 0,
                 streams: int = 1) -> Placement:
    """The placement with each device's estimated compute buffer: the device of the output
    layer sized as the output's (or a layer device's, when larger and it holds layers), others
    holding layers or tensors as a layer's, and the main node's CPU as the host's (or the
    output's, when the output stays there), plus a layer device's when it computes layers."""
    output = p.layer_device.get(model.n_layer, "CPU")
    holders = set(p.layer_device.values()) | {k for k, v in p.model.items() if v}
    holders = {"CPU" if h == "CPU_Mapped" else h for h in holders} | {"CPU"}
    # a device holding repeating layers: a main node that computes some itself (partial
    # offload, ik's split) holds a layer device's buffer besides its host one; the output
    # device needs at least a layer device's (on large models the layers' activations
    # outgrow the logits: a 70B shape's output device was 27 % over the output rule)
    with_layers = {d for il, d in p.layer_device.items() if il < model.n_layer}
    hybrid = 0 < len(model.recurrent_layers) < model.n_layer
    recurrent_only = {d for d in with_layers if hybrid and all(
        il in model.recurrent_layers for il, dd in p.layer_device.items()
        if dd == d and il < model.n_layer)}
    for device in holders:
        role = "output" if device == output else "host" if device == "CPU" else "layers"
        roles = [role] + (["layers"] if role != "layers" and device in with_layers else [])
        sizes = []
        for r in roles:
            mib = estimate_mib(model, flavour, tokens, n_ctx, fa, r, pipeline, swa_cells)
            why = doubt(model, flavour, tokens, n_ctx, fa, r, pipeline, swa_cells)
            if streams > 1 and mib and not why:
                # the rules saw one stream. With more, the graph attends over each stream's
                # cells (n_ctx here), which the rules then fit to within 0.3 MiB on the rig's
                # cli loads with -np 3, but one (tiny-swa's output device) 0.1 MiB short:
                # outside the data, so the margin
                mib = PAD_MIB + (mib - PAD_MIB) * (1 + MARGIN)
                why = f"{streams} KV streams (parallel sequences) are not in the fitted data"
            sizes.append(mib or 0.0)
            if why:
                p.compute_doubts[device] = why
        total = sum(sizes) if role == "host" else max(sizes)
        if total:
            p.compute[device] = int(total * MIB)
            if device in recurrent_only:
                # a hybrid's device with none of its attention layers: every fitted load had
                # one on each device, and such a device allocates less (a Qwen3-Next server of
                # delta-net layers alone, 2.5 MiB where the rule gives 5.8): high, and said
                p.compute_high.add(device)
    p.pipeline = pipeline
    return p


def _compute_note(flavour: str, fa: bool, tokens: int, pipeline: bool, kind: str) -> str:
    errs = [e for e in (error_of(flavour, r, fa, pipeline, kind)
                        for r in ("layers", "output", "host")) if e is not None]
    if not errs:
        return f"compute buffers: no estimate for {flavour} builds; keep headroom for them"
    return (f"compute buffers are estimates for a {tokens}-token micro-batch (flash attention "
            f"{'on' if fa else 'off'}{', pipeline parallelism' if pipeline else ''}): a rule "
            f"fitted from above on recorded runs, never below them and at most "
            f"{100 * max(errs):.0f} % over (bench/compute_fit.py)")


def _suggest_experts(plan: Plan, profile: Profile, main: Capabilities, model: ModelInfo,
                     devices: list[Device], experts_on: list[str], eps: dict[str, str],
                     split: list[float] | None, placed: Callable[..., Placement]) -> None:
    """MoE: expert tensors onto the chosen servers, the rest by the layer rule."""
    unknown = [s for s in experts_on if s not in eps]
    if unknown:
        raise UserError(f"--experts-on: no server {unknown[0]} in {profile.path}",
                        f"name servers as node:port: {', '.join(eps)}")
    targets = [largv.rpc_buffer(main, eps[s], 0) for s in experts_on]
    others = [t for t in model.tensors if not expert_layers_of(t.name)]
    rest = dataclasses.replace(model, tensors=tuple(others))
    base = placed(split, None, rest)
    rules = suggest_expert_overrides(model, devices, targets, profile.headroom_mib, base)
    if rules is None:
        plan.suggested_overrides, plan.suggested_fits = [], False
        return
    names = {largv.rpc_buffer(main, eps[s], 0): s for s in experts_on}
    plan.suggested_overrides = [(pattern, names[target]) for pattern, target in rules]
    again = placed(split, rules)
    plan.suggested_fits = _rows(devices, again, profile.headroom_mib)[1]


def shared_ram(devices: list[Device]) -> dict[str, list[Device]]:
    """Nodes with more than one CPU-backed server device: they share that node's RAM."""
    by_node: dict[str, list[Device]] = {}
    for d in devices:
        if d.backend == "cpu" and d.name.startswith("RPC"):
            by_node.setdefault(d.node, []).append(d)
    return {node: ds for node, ds in by_node.items() if len(ds) > 1}


def _rows(devices: list[Device], p: Placement, headroom: float) -> tuple[list[dict[str, Any]], bool]:
    rows: list[dict[str, Any]] = []
    fits = True
    model = p.mib("model")
    kv = p.mib("kv")
    compute = p.mib("compute")
    for d in devices:
        need = model.get(d.name, 0.0) + kv.get(d.name, 0.0) + compute.get(d.name, 0.0)
        ok = need <= d.free_mib - headroom
        fits = fits and ok
        rows.append({"device": d.name, "node": d.node, "scope": "device",
                     "model_mib": round(model.get(d.name, 0.0), 2),
                     "kv_mib": round(kv.get(d.name, 0.0), 2),
                     "compute_mib": round(compute.get(d.name, 0.0), 2), "need_mib": round(need, 2),
                     "free_mib": round(d.free_mib, 1), "fits": ok})
    # Servers of the CPU backend on one node each report that node's free RAM: together
    # they must fit in it once.
    for node, shared in shared_ram(devices).items():
        names = {d.name for d in shared}
        part = [r for r in rows if r["device"] in names]
        need = sum(r["need_mib"] for r in part)
        free = max(d.reported_mib if d.reported_mib is not None else d.free_mib for d in shared)
        ok = need <= free - headroom
        fits = fits and ok
        rows.append({"device": f"RAM of {node} ({len(shared)} servers)", "node": node,
                     "scope": "node", "model_mib": round(sum(r["model_mib"] for r in part), 2),
                     "kv_mib": round(sum(r["kv_mib"] for r in part), 2),
                     "compute_mib": round(sum(r["compute_mib"] for r in part), 2),
                     "need_mib": round(need, 2), "free_mib": round(free, 1), "fits": ok})
    host = model.get("CPU_Mapped", 0.0) + kv.get("CPU", 0.0) + compute.get("CPU", 0.0)
    rows.append({"device": "CPU (main node)", "node": "", "scope": "host",
                 "model_mib": round(model.get("CPU_Mapped", 0.0), 2),
                 "kv_mib": round(kv.get("CPU", 0.0), 2),
                 "compute_mib": round(compute.get("CPU", 0.0), 2), "need_mib": round(host, 2),
                 "free_mib": None, "fits": True})
    return rows, fits


def render(plan: Plan) -> str:
    m = plan.model
    head = (f"model {m.path}: {m.arch}, {m.n_layer} layers, {m.size_bytes / MIB:.2f} MiB"
            f"{', tied embeddings' if m.tied else ''}; KV for {plan.n_ctx} tokens; "
            f"headroom {plan.headroom_mib:g} MiB")
    lines = [head]
    lines += [f"warning: {m}\n  fix: {f}" for m, f in plan.warnings]
    lines += [f"note: {n}" for n in plan.notes]
    cols = ("device", "node", "model_mib", "kv_mib", "compute_mib", "need_mib", "free_mib", "fits")
    lines.append("| " + " | ".join("compute_mib (est.)" if c == "compute_mib" else c
                                   for c in cols) + " |")
    lines.append("| " + " | ".join("---" for _ in cols) + " |")
    for r in plan.rows:
        cells = [str(r[c]) if r[c] is not None else "" for c in cols]
        cells[-1] = "yes" if r["fits"] else "NO"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("plan: fits" if plan.fits else "plan: DOES NOT FIT")
    if plan.suggested_overrides:
        lines.append("suggested for the experts (override_tensors):")
        for pattern, server in plan.suggested_overrides:
            lines.append(f"  {{ pattern = '{pattern}', server = \"{server}\" }}")
        lines.append("  experts " + ("fit" if plan.suggested_fits else "do not fit"))
    elif plan.suggested_overrides is not None:
        lines.append("the experts do not fit on the chosen servers")
    if plan.suggested_split:
        ts = "/".join(f"{x:g}" for x in plan.suggested_split)
        verdict = (f"fits, fullest device at {100 * (plan.suggested_fill or 0):.0f}% of its room"
                   if plan.suggested_fits else "nothing fits: the devices are too small")
        lines.append(f"suggested: tensor_split = {plan.suggested_split}  (-ts {ts}; {verdict})")
    return "\n".join(lines) + "\n"
