"""ik_llama.cpp's placement (src/llama.cpp, get_layer_sizes and llm_load_tensors, build 4411):
its own size of each layer, its greedy fill of the split's slots, and the device numbering
those slots land on; and -ts values that make the fill give each device chosen layers."""

from __future__ import annotations

import numpy as np

from rpctui.llama.caps import Capabilities
from rpctui.plan.gguf import ModelInfo
from rpctui.plan.placement import MIB, Device, Placement, kv_layer_bytes, offloaded
from rpctui.profile.schema import Profile

# It sizes each layer as weights + KV for the model's whole trained context, plus an
# activation estimate, and fills devices greedily in the order of its split.
IK_MARGIN = 1024 * MIB  #: free memory ik_llama.cpp keeps back on every device
IK_UBATCH = 512  #: llama-bench never passes its -ub to the model loader
_IK_EXPS = {"ffn_gate_up_exps", "ffn_up_exps", "ffn_gate_exps", "ffn_down_exps"}
_IK_SHEXP = {"ffn_up_shexp", "ffn_gate_shexp", "ffn_down_shexp"}
_IK_DENSE = {"ffn_up", "ffn_gate", "ffn_down"}
_IK_NORMS = {"attn_norm", "attn_norm_2", "attn_output_norm", "post_attention_norm", "ffn_norm",
             "post_ffw_norm", "layer_output_norm"}


def ik_layer_sizes(model: ModelInfo, kv_ctx: int, n_ubatch: int = IK_UBATCH,
                   cache_types: tuple[str, str] = ("f16", "f16")) -> tuple[list[float], float]:
    """ik_llama.cpp's own size of each of the n_layer + 1 layers (its "Layer sizes" table)
    and the largest per-layer compute estimate it sets aside on every device."""
    n = model.n_layer
    result = [0.0] * (n + 1)
    exps, shexp, dense = [0] * n, [0] * n, [0] * n
    norm = [False] * n
    ow = embd = 0
    for t in model.tensors:
        if t.name == "token_embd.weight":
            embd = t.n_bytes
            continue
        if t.name == "output.weight":
            ow = t.n_bytes
            continue
        if t.layer is None or not 0 <= t.layer < n:
            continue
        il = t.layer
        result[il] += t.n_bytes
        if t.name.endswith(".bias"):
            continue
        kind = t.name.split(".")[2]
        ne1 = t.dims[1] if len(t.dims) > 1 else 1
        if kind in _IK_EXPS:
            exps[il] += ne1 * n_ubatch * model.n_expert_used * 4
        elif kind in _IK_SHEXP:
            shexp[il] += ne1 * n_ubatch * 4
        elif kind in _IK_DENSE:
            dense[il] += ne1 * n_ubatch * 4
        elif kind in _IK_NORMS:
            norm[il] = True
    compute = [max(exps[il], shexp[il], dense[il])
               + model.n_embd * n_ubatch * 4 * (2 if norm[il] else 1) for il in range(n)]
    max_compute = float(max(compute, default=0))
    kv = kv_layer_bytes(model, kv_ctx, *cache_types)
    for il in range(n):
        result[il] += kv
    output = model.n_vocab * n_ubatch * 4
    result[n] = float(ow or embd) + int(max(output, max_compute) - max_compute)
    return result, max_compute


def ik_layer_devices(sizes: list[float], max_compute: float, weights: list[float],
                     ngl: int | None = None) -> list[int]:
    """ik_llama.cpp's greedy assignment: the split slot (index into ``weights``) of each
    layer 0..n_layer (the last is the output layer), -1 for a layer left on the CPU.
    ``weights`` are the -ts values, or each device's free bytes less its margin."""
    n = len(sizes) - 1
    ngl = n + 1 if ngl is None or ngl < 0 else ngl
    count = len(weights)
    f32 = np.float32
    splits = [f32(1.0)]
    if count > 1:
        acc, cum = f32(0), []
        for w in weights:
            acc = f32(acc + f32(w))
            cum.append(acc)
        splits = [f32(c / acc) for c in cum]
    slot = [count - 1] * (n + 1)
    start = max(n - ngl, 0)
    if count > 1:
        n_last = n + 1 if ngl > n else n
        total = max_compute * count + sum(sizes[start:n_last])
        last, loaded = start, f32(0)
        for k in range(count):
            loaded = f32(loaded + max_compute)
            split_size = f32(float(splits[k]) * total)
            il = last
            while il < n_last:
                if float(loaded) + sizes[il] <= float(split_size):
                    slot[il] = k
                    loaded = f32(float(loaded) + sizes[il])
                    il += 1
                    continue
                if float(loaded) + sizes[il] - float(split_size) < float(f32(split_size - loaded)):
                    slot[il] = k
                    loaded = f32(float(loaded) + sizes[il])
                    il += 1
                break
            last = il
    for il in range(start):
        slot[il] = -1
    if ngl <= n:
        slot[n] = -1
    return slot


def ik_split_for(sizes: list[float], max_compute: float, counts: list[int],
                 digits: int = 3) -> list[float]:
    """-ts values that make ik_llama.cpp's greedy fill give slot k exactly counts[k] layers
    (all layers offloaded): each slot's weight is what it loads (its compute reserve and its
    layers), with each cut placed a quarter into the next slot's first layer, so rounding
    cannot move a layer across it. Checked against ik_layer_devices by the caller."""
    cum, il, cuts = 0.0, 0, []
    for k, c in enumerate(counts):
        cum += max_compute + sum(sizes[il:il + c])
        il += c
        nxt = sizes[il] if il < len(sizes) and k < len(counts) - 1 else 0.0
        cuts.append(cum + nxt / 4)
    cuts[-1] = max(cuts[-1], cum)
    weights = [b - a for a, b in zip([0.0] + cuts[:-1], cuts, strict=True)]
    return [round(w / MIB, digits) for w in weights]


class IkRule:
    """ik_llama.cpp's placement. Its split has a slot per device: the servers in --rpc order,
    then the main node's GPUs (or, on a CPU-only build, its CPU, with no free memory). It sizes
    layers its own way (weights, KV for the model's whole trained context, the output layer
    with its logits) and fills the slots greedily; but it then loads slot k's layers on
    device k of its own numbering, which lists the local devices (the CPU on a CPU build)
    before the servers: the first share of layers lands on the main node."""

    def __init__(self, profile: Profile, main: Capabilities, model: ModelInfo,
                 devices: list[Device]) -> None:
        self.model, self.job = model, profile.job
        rpc = [d for d in devices if d.name.startswith("RPC")]
        local = [d for d in devices if not d.name.startswith("RPC")]
        if not local:
            local = [Device("CPU", profile.main_node.label, 0.0, reported_mib=0.0)]
        self.slots = rpc + local  #: the split's order (model.devices)
        self.raw = local + rpc  #: ik's own device numbering, where slot k's layers land
        job = profile.job
        bench = job.kind == "bench"
        self.kv_ctx = (job.ctx_size if job.ctx_size and not bench else 0) or model.n_ctx_train
        ubatch = job.ubatch_size or IK_UBATCH
        if not bench:
            ubatch = min(ubatch, job.batch_size or 2048, job.ctx_size or ubatch)
        self.ubatch = IK_UBATCH if bench else ubatch
        self.types = (job.cache_type_k or "f16", job.cache_type_v or "f16")
        self.sizes, self.max_compute = ik_layer_sizes(model, self.kv_ctx, self.ubatch, self.types)

    def weights(self, ts: list[float] | None) -> list[float]:
        if ts and any(ts):
            return (list(ts) + [0.0] * len(self.slots))[:len(self.slots)]
        return [max(d.split_weight * MIB - IK_MARGIN, 0.0) for d in self.slots]

    def layer_devices(self, ts: list[float] | None) -> dict[int, str]:
        slots = ik_layer_devices(self.sizes, self.max_compute, self.weights(ts), self.job.ngl)
        return {il: self.raw[k].name if k >= 0 else "CPU" for il, k in enumerate(slots)}

    def split_for(self, counts: list[float]) -> list[float]:
        """-ts values (in slot order) giving each device of ik's numbering ``counts`` layers."""
        span = offloaded(self.model.n_layer, self.job.ngl, "ik")
        want = [int(c) for c in counts]
        for digits in (3, 6, 9):  # short values, unless rounding would move a layer
            ts = ik_split_for([self.sizes[il] for il in span], self.max_compute, want, digits)
            got = ik_layer_devices(self.sizes, self.max_compute, [w * MIB for w in ts],
                                   self.job.ngl)
            if [got.count(k) for k in range(len(want))] == want:
                break
        return ts  # the plan of the suggestion is checked like any other

    def notes(self, placement: Placement) -> list[str]:
        out = [f"ik_llama.cpp's rule: layers sized with KV for {self.kv_ctx} tokens and "
               f"{self.max_compute / MIB:.2f} MiB of compute per device, filled greedily"]
        on_cpu = [il for il, d in placement.layer_device.items() if d == "CPU"]
        if on_cpu and self.raw[0].name == "CPU":
            out.append(f"ik_llama.cpp loads split slot k on its device k, and its device 0 is "
                       f"the main node's CPU: {len(on_cpu)} of {self.model.n_layer + 1} layers "
                       f"stay there; the suggested split gives slot 0 nothing")
        idle = [d.name for d in self.raw if d.name != "CPU"
                and d.name not in placement.layer_device.values()]
        if idle:
            out.append(f"no layers on {', '.join(idle)}")
        return out
