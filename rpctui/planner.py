"""The memory plan of a profile: devices in the client's order with their free memory (from
the probe), the model's placement on them, a verdict per node, and a split that fits.

Used by ``rpctui plan`` and by the preflight of ``check`` and ``run``, which refuse a plan
that does not fit unless forced. Predicts mainline llama.cpp's placement; for other
flavours the prediction is marked as such (ik_llama.cpp places layers greedily by size).
"""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpctui.llama import argv as largv
from rpctui.llama.caps import Capabilities
from rpctui.errors import UserError
from rpctui.llama.plan import (_EXPERT, MIB, Device, ModelInfo, Placement, _Header, place,
                               read_model, shards, suggest_expert_overrides, suggest_split)
from rpctui.profile import Profile, endpoint

#: how much of a remote model file is fetched to read its header: a little first (most
#: headers are a few MiB), more only when that was not enough
HEADER_BYTES = (4 * MIB, 64 * MIB)


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

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.path, "arch": self.model.arch, "n_layer": self.model.n_layer,
                "model_mib": round(self.model.size_bytes / MIB, 2), "n_ctx": self.n_ctx,
                "flavour": self.flavour, "exact_rule": self.flavour in ("mainline", "seed-era"),
                "headroom_mib": self.headroom_mib, "devices": self.rows, "fits": self.fits,
                "suggested_tensor_split": self.suggested_split,
                "suggested_fits": self.suggested_fits, "suggested_fill": self.suggested_fill,
                "suggested_override_tensors": [{"pattern": p, "server": s} for p, s in
                                               self.suggested_overrides or []]}


def context_for(profile: Profile, flavour: str = "mainline") -> int:
    """The context the job allocates KV for: ctx_size, or a bench's largest test, padded as
    the build pads it (current mainline: to 256; seed-era: to 32)."""
    job = profile.job
    if job.ctx_size:
        return job.ctx_size
    if job.kind != "bench":
        return 4096
    # llama-bench runs prompt and generation as separate tests, each with its own context:
    # the largest is what a device must hold.
    prompt, gen, depth = max(job.prompt_tokens or [512]), max(job.gen_tokens or [128]), max(
        job.depth or [0])
    n = max(prompt, gen) + depth
    if flavour == "seed-era":
        return -(-n // 32) * 32
    return max(256, -(-n // 256) * 256)


def devices_for(profile: Profile, caps: dict[str, Capabilities]) -> list[Device]:
    """The client's device order: each server's devices in --rpc order, then the main node's
    local GPUs, with the free memory each reports."""
    main = caps[profile.main_node.label]
    out: list[Device] = []
    for node, server in profile.servers():
        c = caps[node.label]
        names = server.devices or ([c.devices[0].name] if c.devices else ["CPU"])
        for i, name in enumerate(names):
            dev = next((d for d in c.devices if d.name == name), None)
            free = float(dev.free_mib) if dev and dev.free_mib is not None else float(
                c.mem_available_mib or 0)
            total = float(dev.total_mib) if dev and dev.total_mib is not None else None
            usable = min(free, float(server.memory_mib)) if server.memory_mib else free
            out.append(Device(largv.rpc_buffer(main, endpoint(node, server), i), node.label,
                              usable, total, reported_mib=free))
    for d in main.client_devices:
        out.append(Device(d.name, profile.main_node.label, float(d.free_mib or 0),
                          float(d.total_mib) if d.total_mib else None))
    return out


async def load_model_info(profile: Profile, model: str, host: Any) -> ModelInfo:
    """Read the GGUF header here when the main node is this machine, else fetch its start."""
    if profile.main_node.is_local:
        return read_model(Path(model).expanduser())

    opened: dict[Path, bytes] = {}
    for shard in shards(model):
        for size in HEADER_BYTES:
            result = await host.run(["sh", "-c", 'head -c "$1" "$0" | base64 -w0', str(shard),
                                     str(size)], timeout=120)
            opened[shard] = base64.b64decode(result.stdout)
            if len(opened[shard]) < size:
                break  # the whole file came
            try:
                _Header(shard, io.BytesIO(opened[shard]))
                break
            except ValueError:
                continue  # the header goes on past what was fetched
    return read_model(model, opener=lambda p: io.BytesIO(opened[p]))


def expert_layers_of(name: str) -> bool:
    return _EXPERT.match(name) is not None


def make_plan(profile: Profile, caps: dict[str, Capabilities], model: ModelInfo,
              tensor_split: list[float] | None = None,
              experts_on: list[str] | None = None) -> Plan:
    devices = devices_for(profile, caps)
    main = caps[profile.main_node.label]
    job = profile.job
    eps = {f"{n.label}:{s.port}": endpoint(n, s) for n, s in profile.servers()}
    overrides = [(r.pattern, r.buffer if r.buffer else largv.rpc_buffer(main, eps[r.server],
                                                                         r.device))
                 for r in job.override_tensors if r.server is None or r.server in eps]
    split = tensor_split if tensor_split is not None else (job.tensor_split or None)
    n_ctx = context_for(profile, main.flavour)
    placement = place(model, devices, job.ngl, split, overrides, n_ctx)
    plan = Plan(model, devices, placement, n_ctx, profile.headroom_mib, main.flavour)
    plan.rows, plan.fits = _rows(devices, placement, profile.headroom_mib)
    if tensor_split is None and not overrides:
        room = [d.free_mib - profile.headroom_mib for d in devices]
        plan.suggested_split, plan.suggested_fill = suggest_split(model, room, n_ctx)
        again = place(model, devices, job.ngl, plan.suggested_split, overrides, n_ctx)
        plan.suggested_fits = _rows(devices, again, profile.headroom_mib)[1]
    if experts_on:
        _suggest_experts(plan, profile, main, model, devices, experts_on, eps, split, n_ctx)
    return plan


def _suggest_experts(plan: Plan, profile: Profile, main: Capabilities, model: ModelInfo,
                     devices: list[Device], experts_on: list[str], eps: dict[str, str],
                     split: list[float] | None, n_ctx: int) -> None:
    """MoE: expert tensors onto the chosen servers, the rest by the layer rule."""
    unknown = [s for s in experts_on if s not in eps]
    if unknown:
        raise UserError(f"--experts-on: no server {unknown[0]} in {profile.path}",
                        f"name servers as node:port: {', '.join(eps)}")
    targets = [largv.rpc_buffer(main, eps[s], 0) for s in experts_on]
    others = [t for t in model.tensors if not expert_layers_of(t.name)]
    rest = dataclasses.replace(model, tensors=tuple(others))
    base = place(rest, devices, profile.job.ngl, split, None, n_ctx)
    rules = suggest_expert_overrides(model, devices, targets, profile.headroom_mib, base)
    if rules is None:
        plan.suggested_overrides, plan.suggested_fits = [], False
        return
    names = {largv.rpc_buffer(main, eps[s], 0): s for s in experts_on}
    plan.suggested_overrides = [(pattern, names[target]) for pattern, target in rules]
    again = place(model, devices, profile.job.ngl, split, rules, n_ctx)
    plan.suggested_fits = _rows(devices, again, profile.headroom_mib)[1]


def _rows(devices: list[Device], p: Placement, headroom: float) -> tuple[list[dict[str, Any]], bool]:
    rows = []
    fits = True
    model = p.mib("model")
    kv = p.mib("kv")
    for d in devices:
        need = model.get(d.name, 0.0) + kv.get(d.name, 0.0)
        ok = need <= d.free_mib - headroom
        fits = fits and ok
        rows.append({"device": d.name, "node": d.node, "model_mib": round(model.get(d.name, 0.0), 2),
                     "kv_mib": round(kv.get(d.name, 0.0), 2), "need_mib": round(need, 2),
                     "free_mib": round(d.free_mib, 1), "fits": ok})
    host = model.get("CPU_Mapped", 0.0) + kv.get("CPU", 0.0)
    rows.append({"device": "CPU (main node)", "node": "", "model_mib": round(host, 2),
                 "kv_mib": round(kv.get("CPU", 0.0), 2), "need_mib": round(host, 2),
                 "free_mib": None, "fits": True})
    return rows, fits


def render(plan: Plan) -> str:
    m = plan.model
    head = (f"model {m.path}: {m.arch}, {m.n_layer} layers, {m.size_bytes / MIB:.2f} MiB"
            f"{', tied embeddings' if m.tied else ''}; KV for {plan.n_ctx} tokens; "
            f"headroom {plan.headroom_mib:g} MiB")
    lines = [head]
    if plan.flavour not in ("mainline", "seed-era"):
        lines.append(f"note: {plan.flavour} places layers by its own rule; this is mainline's")
    cols = ("device", "node", "model_mib", "kv_mib", "need_mib", "free_mib", "fits")
    lines.append("| " + " | ".join(cols) + " |")
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
