"""Where every byte lands before loading: GGUF -> per-device memory, and splits that fit (pure
once the model's tensors are read).

Reproduces current mainline llama.cpp's placement (src/llama-model.cpp, load_tensors):
devices in --rpc order then local GPUs; split points from -ts or the devices' free memory,
normalised cumulative float32; layer il (and the output layer, index n_layer) goes to
upper_bound(splits, (il - start) / act); the input layer (token_embd) always stays on the
CPU; a model without output.weight loads token_embd again on the output layer's device;
-ot matches win over the layer rule. KV cache: per layer, on that layer's device, and so is
the state of a recurrent layer (Mamba-style), which takes the place of its KV cache.
ik_llama.cpp's own rule is in rpctui.llama.ik_rule. Compute buffers cannot be derived from
the file: rpctui.plan.compute estimates them. The file is read by rpctui.llama.gguf_header.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from rpctui.plan.gguf import ModelInfo, Tensor, type_block, type_bytes
from rpctui.plan.kv import KvLayout, layer_cells

MIB = 1024 * 1024
ALIGN = 32  #: tensor alignment in CPU buffers (and RPC buffers of CPU servers)
#: buffer alignment per backend (ggml-*/get_alignment): CUDA and HIP 128; Vulkan's is the
#: device's minStorageBufferOffsetAlignment (4 to 256), taken here as the CPU's
ALIGNMENT = {"cpu": 32, "cuda": 128, "rocm": 128, "vulkan": 32, "metal": 32, "sycl": 32}
#: CUDA and HIP pad the last row of a quantized matrix to a multiple of this many values
MATRIX_ROW_PADDING = 512


@dataclass(frozen=True)
class Device:
    """A device the client will place layers on, in its order."""

    name: str  #: as llama.cpp names its buffer, e.g. RPC0[10.0.0.2:50052] or CUDA0
    node: str
    free_mib: float  #: what may be used: free memory, or the profile's budget when smaller
    total_mib: float | None = None
    reported_mib: float | None = None  #: free memory as the server reports it to the client
    backend: str = "cpu"  #: the backend behind it (a server's device: cuda, vulkan, ...)

    @property
    def split_weight(self) -> float:
        """What llama.cpp's default split weighs this device by: the reported free memory."""
        return self.reported_mib if self.reported_mib is not None else self.free_mib


@dataclass
class Placement:
    """Predicted bytes per buffer (device name, or CPU for what stays on the host)."""

    model: dict[str, int] = field(default_factory=dict)
    kv: dict[str, int] = field(default_factory=dict)
    layer_device: dict[int, str] = field(default_factory=dict)
    #: estimated compute buffers (see rpctui.plan.compute); "CPU" is the main node's
    compute: dict[str, int] = field(default_factory=dict)
    pipeline: bool = False  #: mainline's pipeline parallelism (larger compute buffers)
    #: devices whose compute estimate is outside the rule's data (and has a margin): why
    compute_doubts: dict[str, str] = field(default_factory=dict)
    #: devices whose compute estimate is known to be high (a hybrid's devices with recurrent
    #: layers alone), which the plan says
    compute_high: set[str] = field(default_factory=set)
    #: the tensors each buffer receives (what a client sends a server, for its cache)
    tensors: dict[str, list[Tensor]] = field(default_factory=dict)

    def mib(self, kind: str = "model") -> dict[str, float]:
        return {k: v / MIB for k, v in getattr(self, kind).items()}


def _padded(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


def alloc_bytes(t: Tensor, backend: str = "cpu") -> int:
    """What a tensor takes in a buffer of this backend (ggml_backend_buft_get_alloc_size,
    padded to the buffer's alignment)."""
    size = t.n_bytes
    if backend in ("cuda", "rocm") and t.dims and t.dims[0] % MATRIX_ROW_PADDING:
        if type_block(t.ttype)[0] > 1:  # quantized
            size += type_bytes(t.ttype, MATRIX_ROW_PADDING - t.dims[0] % MATRIX_ROW_PADDING)
    return _padded(size, ALIGNMENT.get(backend, ALIGN))


def split_points(weights: list[float]) -> list[float]:
    """Cumulative, normalised split points, in float32 as llama.cpp computes them."""
    acc = np.float32(0)
    points = []
    for w in weights:
        acc = np.float32(acc + np.float32(w))
        points.append(acc)
    return [float(np.float32(p / acc)) for p in points]


def kv_layer_bytes(model: ModelInfo, n_ctx: int, type_k: str = "f16", type_v: str = "f16",
                   il: int | None = None) -> int:
    """One layer's K and V cache for n_ctx cells (layer il's heads; none for a recurrent
    layer). Without flash attention, b6110 and mainline give every layer's V the widest
    layer's width; the hybrids here have one width for all their attention layers."""
    gqa = model.n_head_kv if il is None else model.head_kv(il)
    v = type_bytes(type_v, model.head_dim_v * gqa) if model.v_cache else 0
    return (type_bytes(type_k, model.head_dim_k * gqa) + v) * n_ctx


def state_bytes(model: ModelInfo, il: int, seqs: int = 1, backend: str = "cpu",
                packed: bool = False) -> int:
    """Layer il's recurrent state, if it keeps one (llama_memory_recurrent): an r and an s
    tensor of f32, a row per sequence (n_seq_max, at least 1), each padded to the buffer's
    alignment. llama.cpp prints them as an RS buffer; the plan counts them with the KV.
    ``packed``: one tensor of both (ik_llama.cpp's, in its KV buffer)."""
    if model.ssm is None or il not in model.recurrent_layers:
        return 0
    align = ALIGNMENT.get(backend, ALIGN)
    rows = max(1, seqs)
    r, s = model.ssm.r_floats * 4 * rows, model.ssm.s_floats * 4 * rows
    return _padded(r + s, align) if packed else _padded(r, align) + _padded(s, align)


def offloaded(n_layer: int, ngl: int | None, flavour: str = "mainline") -> range:
    """The layers a split distributes (n_layer is the output layer). Mainline offloads the
    last ngl of the n_layer + 1; ik_llama.cpp the last ngl repeating layers, and the output
    layer only when ngl exceeds n_layer."""
    n = n_layer
    ngl = n + 1 if ngl is None or ngl < 0 else ngl
    if flavour in ("ik", "seed-era"):  # seed-era: the first offloaded is n_layer - ngl too
        return range(max(n - ngl, 0), n + 1 if ngl > n else n)
    return range(max(n + 1 - ngl, 0), n + 1)


def layer_devices(n_layer: int, devices: list[Device], ngl: int | None = None,
                  tensor_split: list[float] | None = None,
                  flavour: str = "mainline") -> dict[int, str]:
    """Mainline's device for each layer 0..n_layer (the output layer last); "CPU" for the
    layers before the first offloaded one (n_layer + 1 - ngl; in seed-era builds n_layer -
    ngl, so that their output layer stays on the CPU unless ngl exceeds n_layer)."""
    n = n_layer
    ngl = n + 1 if ngl is None or ngl < 0 else ngl
    start = max((n if flavour == "seed-era" else n + 1) - ngl, 0)
    act = min(ngl, n + 1) if devices else 0
    weights = (tensor_split if tensor_split and any(tensor_split)
               else [d.split_weight for d in devices])
    points = split_points(weights) if devices else []

    def device_of(il: int) -> str:
        if il < start or il - start >= act:
            return "CPU"
        i = bisect_right(points, float(np.float32(il - start) / np.float32(act)))
        return devices[min(i, len(devices) - 1)].name

    return {il: device_of(il) for il in range(n + 1)}


def split_margin(n_layer: int, weights: list[float], ngl: int | None = None) -> float:
    """How far (as a share of all layers) the nearest layer sits from a split point: near 0,
    a small change in the weights (the devices' free memory) moves a layer across."""
    n = n_layer
    ngl = n + 1 if ngl is None or ngl < 0 else ngl
    act = min(ngl, n + 1)
    if len(weights) < 2 or act <= 0:
        return 1.0
    fractions = [float(np.float32(i) / np.float32(act)) for i in range(act)]
    return min(abs(f - p) for p in split_points(weights)[:-1] for f in fractions)


def place(model: ModelInfo, devices: list[Device], ngl: int | None = None,
          tensor_split: list[float] | None = None,
          overrides: list[tuple[str, str]] | None = None, n_ctx: int | None = None,
          cache_types: tuple[str, str] = ("f16", "f16")) -> Placement:
    """Mainline llama.cpp's placement of every tensor, and the KV cache for n_ctx."""
    return fill(model, layer_devices(model.n_layer, devices, ngl, tensor_split), overrides,
                n_ctx, cache_types, backends={d.name: d.backend for d in devices})


def fill(model: ModelInfo, layer_device: dict[int, str],
         overrides: list[tuple[str, str]] | None, n_ctx: int | None,
         cache_types: tuple[str, str] = ("f16", "f16"), mmap: bool = True,
         backends: dict[str, str] | None = None, kv: KvLayout | None = None) -> Placement:
    """Every tensor's bytes on its buffer, given the device of each layer (n_layer is the
    output layer; "CPU" for the host): the input layer stays on the CPU, a model without
    output.weight loads token_embd again with the output layer, -ot rules win. With mmap,
    the host's buffer is the file range from its first tensor to the end of its last, per
    shard (llama_model_loader::get_mapping_range), other devices' tensors in between too.
    ``kv``: the cells of each layer's cache (rpctui.plan.kv: sliding windows, parallel
    sequences); without it, n_ctx each."""
    n = model.n_layer
    out = Placement(layer_device=dict(layer_device))
    output_dev = layer_device[n]
    rules = [(re.compile(p), buf) for p, buf in overrides or []]
    mapped: dict[int, tuple[int, int]] = {}  # shard -> (first, last) byte of host tensors

    def add(where: str, t: Tensor) -> None:
        key = "CPU_Mapped" if where == "CPU" else where
        out.model[key] = out.model.get(key, 0) + alloc_bytes(t, (backends or {}).get(key, "cpu"))
        out.tensors.setdefault(key, []).append(t)
        if key == "CPU_Mapped":
            first, last = mapped.get(t.shard, (t.offset, t.offset + t.n_bytes))
            mapped[t.shard] = (min(first, t.offset), max(last, t.offset + t.n_bytes))

    for t in model.tensors:
        target = next((buf for rx, buf in rules if rx.search(t.name)), None)
        if target is not None:
            add(target, t)
        elif t.layer is not None:
            add(layer_device[t.layer], t)
        elif t.name.startswith("token_embd"):
            add("CPU", t)  # the input layer always stays on the CPU
            if model.tied and output_dev != "CPU":
                add(output_dev, t)  # tied embeddings: loaded again for the output layer
        else:
            add(output_dev, t)  # output, output_norm and other non-block tensors
    if mmap and mapped:
        out.model["CPU_Mapped"] = sum(last - first for first, last in mapped.values())
    if n_ctx:
        seqs, packed = (kv.seqs, kv.packed_state) if kv else (1, False)
        for il, cells in enumerate(layer_cells(model, n_ctx, kv)):
            where = layer_device[il]
            out.kv[where] = (out.kv.get(where, 0) + kv_layer_bytes(model, cells, *cache_types, il)
                             + state_bytes(model, il, seqs, (backends or {}).get(where, "cpu"),
                                           packed))
    return out


def layer_bytes(model: ModelInfo, n_ctx: int | None = None,
                cache_types: tuple[str, str] = ("f16", "f16"),
                kv: KvLayout | None = None) -> list[int]:
    """Bytes each of the n_layer + 1 offloadable layers brings to its device: weights (and KV),
    the last entry being the output layer (with token_embd again when embeddings are tied)."""
    sizes = [0] * (model.n_layer + 1)
    for t in model.tensors:
        if t.layer is not None:
            sizes[t.layer] += _padded(t.n_bytes)
        elif not t.name.startswith("token_embd") or model.tied:
            sizes[model.n_layer] += _padded(t.n_bytes)
    if n_ctx:
        for il, cells in enumerate(layer_cells(model, n_ctx, kv)):
            sizes[il] += (kv_layer_bytes(model, cells, *cache_types, il)
                          + state_bytes(model, il, kv.seqs if kv else 1))
    return sizes


def suggest_split(model: ModelInfo, capacities_mib: list[float], n_ctx: int | None = None,
                  cache_types: tuple[str, str] = ("f16", "f16"),
                  fixed_mib: list[float] | None = None,
                  layers: range | None = None,
                  kv: KvLayout | None = None) -> tuple[list[float], float]:
    """A tensor split that fits: (layer counts per device as split weights, the fullest
    device's share of its capacity). Layers go to devices in order in contiguous runs (that
    is all a split can express), so the best split is the one whose fullest device is least
    full: found by bisecting on that fill with a greedy fill of each device. Split weights
    equal to layer counts give each device exactly its count under llama.cpp's rule."""
    sizes = layer_bytes(model, n_ctx, cache_types, kv)
    if layers is not None:  # partial offload: only these layers are split
        sizes = [sizes[il] for il in layers]
    caps = [max(c - (fixed_mib[i] if fixed_mib else 0.0), 0.0) * MIB
            for i, c in enumerate(capacities_mib)]

    def fill(u: float) -> list[int] | None:
        counts, i = [], 0
        for cap in caps:
            used, n = 0, 0
            while i < len(sizes) and used + sizes[i] <= u * cap:
                used += sizes[i]
                i += 1
                n += 1
            counts.append(n)
        return counts if i == len(sizes) else None

    lo, hi = 0.0, 1.0
    while fill(hi) is None and hi < 1e6:
        hi *= 2
    if fill(hi) is None:
        return [1.0] * len(caps), float("inf")
    for _ in range(60):
        mid = (lo + hi) / 2
        if fill(mid) is None:
            lo = mid
        else:
            hi = mid
    counts = level(sizes, caps, hi) or fill(hi)
    assert counts is not None
    return [float(c) for c in counts], hi


def level(sizes: list[int], caps: list[float], fill_limit: float) -> list[int] | None:
    """Spread layers so each device fills about as much as the others (never past the
    smallest feasible fill): each takes its capacity's share of what is left."""
    counts, i = [], 0
    for k, cap in enumerate(caps):
        remaining = sum(sizes[i:])
        room_left = sum(caps[k:]) or 1.0
        target = min(fill_limit * cap, remaining * cap / room_left)
        used, n = 0, 0
        while i < len(sizes) and (k == len(caps) - 1 or used + sizes[i] / 2 <= target) \
                and used + sizes[i] <= fill_limit * cap:
            used += sizes[i]
            i += 1
            n += 1
        counts.append(n)
    return counts if i == len(sizes) else None


_EXPERT = re.compile(r"^blk\.(\d+)\.ffn_(?:gate|up|down)_exps\.")


def expert_layers(model: ModelInfo) -> dict[int, int]:
    """Bytes of expert tensors (ffn_{gate,up,down}_exps) per layer of a mixture of experts."""
    out: dict[int, int] = {}
    for t in model.tensors:
        m = _EXPERT.match(t.name)
        if m:
            out[int(m.group(1))] = out.get(int(m.group(1)), 0) + _padded(t.n_bytes)
    return out


def expert_pattern(layers: list[int]) -> str:
    """An -ot pattern for the expert tensors of these layers."""
    return rf"blk\.({'|'.join(str(i) for i in layers)})\.ffn_(gate|up|down)_exps"


def suggest_expert_overrides(model: ModelInfo, devices: list[Device], targets: list[str],
                             headroom_mib: float, base: Placement) -> list[tuple[str, str]] | None:
    """-ot rules sending the expert tensors, layer by layer in order, to the ``targets``
    (device names), each filled in proportion to the room the rest of the plan leaves it.
    ``base`` is the placement of everything else. None when the experts do not fit."""
    experts = expert_layers(model)
    if not experts:
        return []
    by_name = {d.name: d for d in devices}
    room = [max(by_name[t].free_mib * MIB - headroom_mib * MIB - base.model.get(t, 0)
                - base.kv.get(t, 0), 0.0) for t in targets]
    total = sum(experts.values())
    if total > sum(room):
        return None
    rules: list[tuple[str, str]] = []
    layers = sorted(experts)
    i = 0
    for k, target in enumerate(targets):
        share = total * room[k] / sum(room) if k < len(targets) - 1 else float("inf")
        taken: list[int] = []
        used = 0
        while i < len(layers) and used + experts[layers[i]] <= min(share + experts[layers[i]] / 2,
                                                                     room[k]):
            used += experts[layers[i]]
            taken.append(layers[i])
            i += 1
        if taken:
            rules.append((expert_pattern(taken), target))
    return rules if i == len(layers) else None
