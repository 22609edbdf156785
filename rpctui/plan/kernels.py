"""What a backend's kernels cannot run, known before launch: a Vulkan server given Mamba
layers it has no scan for, ik_llama.cpp's fused ops sent to its Vulkan servers, flash
attention on CUDA heads without a kernel. Each check names the devices and whether a server
would abort; the plan turns them into warnings or notes."""

from __future__ import annotations

from rpctui.plan.compute import fa_supported
from rpctui.plan.gguf import DELTA_NET_ARCHS, ModelInfo, Tensor
from rpctui.plan.placement import Device, Placement

#: the state sizes ggml-vulkan.cpp has a selective-scan kernel for (Mamba-2 only, heads a
#: multiple of 16 wide)
VULKAN_SCAN_STATES = (128, 256)


def scan_kernels(model: ModelInfo, devices: list[Device], p: Placement
                 ) -> tuple[str, bool] | None:
    """Vulkan devices holding recurrent layers whose scan they have no kernel for: (what to
    say, whether a server will abort). A Vulkan rpc-server aborts mid-job
    (GGML_ASSERT(pipeline != nullptr), seen with a d_state of 64 on an H200); the client's own
    Vulkan device reports the op unsupported and the scheduler runs it on the CPU."""
    ssm = model.ssm
    if ssm is None or not model.recurrent_layers or model.arch in DELTA_NET_ARCHS:
        return None  # a delta net has no scan: Vulkan has its GATED_DELTA_NET op
    head = ssm.d_inner // ssm.n_head if ssm.n_head else 0
    if ssm.n_group and ssm.d_state in VULKAN_SCAN_STATES and head % 16 == 0:
        return None
    backend = {d.name: d.backend for d in devices}
    holders = sorted({dev for il, dev in p.layer_device.items()
                      if il in model.recurrent_layers and backend.get(dev) == "vulkan"})
    if not holders:
        return None
    what = (f"Mamba-2 layers with a state of {ssm.d_state} x {head}" if ssm.n_group
            else "Mamba-1 layers")
    remote = [d for d in holders if d.startswith("RPC")]
    if remote:
        return (f"{', '.join(remote)} (Vulkan) hold {what}, which Vulkan has no scan kernel "
                f"for (it has them for Mamba-2 states of 128 and 256): the rpc-server will "
                f"abort mid-job (ggml-vulkan.cpp: GGML_ASSERT(pipeline != nullptr))", True)
    return (f"{', '.join(holders)} (Vulkan) hold {what}, which Vulkan has no scan kernel for: "
            f"llama.cpp runs that step on the CPU (slower)", False)


#: ggml types that are not quantized (F32, F16, BF16): ik_llama.cpp fuses up and gate of
#: quantized dense weights only (ggml.c ggml_fused_up_gate)
_PLAIN_TYPES = (0, 1, 30)


def ik_fused_ops(model: ModelInfo, devices: list[Device], p: Placement, flavour: str,
                 kind: str, extra: list[str]) -> tuple[str, str] | None:
    """ik_llama.cpp fuses a feed-forward block's up and gate (FUSED_UP_GATE for quantized dense
    weights, MOE_FUSED_UP_GATE for experts) unless told not to; its Vulkan backend has neither
    op, and a Vulkan rpc-server sent one aborts (seen on an H200: "ggml_vulkan: Error: Missing
    op"). The client's own Vulkan device reports them unsupported and the CPU runs them."""
    if flavour != "ik":
        return None
    bench = kind == "bench"
    moe_off = _flag_value(extra, "-fmoe", "--fused-moe") == "0" if bench else bool(
        {"-no-fmoe", "--no-fused-moe"} & set(extra))
    fug_off = _flag_value(extra, "-no-fug", "--no-fused-up-gate") == "1" if bench else bool(
        {"-no-fug", "--no-fused-up-gate"} & set(extra))
    layers: dict[int, dict[str, Tensor]] = {}
    for t in model.tensors:
        if t.layer is not None:
            layers.setdefault(t.layer, {})[t.name.split(".", 2)[2]] = t
    ops: set[str] = set()
    remote = {d.name for d in devices if d.backend == "vulkan" and d.name.startswith("RPC")}
    holders: set[str] = set()
    for il, dev in p.layer_device.items():
        if dev not in remote:
            continue
        ts = layers.get(il, {})
        up, gate = ts.get("ffn_up_exps.weight"), ts.get("ffn_gate_exps.weight")
        if not moe_off and up and gate and up.ttype == gate.ttype:
            ops.add("MOE_FUSED_UP_GATE")
            holders.add(dev)
        up, gate = ts.get("ffn_up.weight"), ts.get("ffn_gate.weight")
        if (not fug_off and up and gate and up.ttype == gate.ttype and up.dims == gate.dims
                and up.ttype not in _PLAIN_TYPES and "ffn_up.bias" not in ts):
            ops.add("FUSED_UP_GATE")
            holders.add(dev)
    if not ops:
        return None
    flags = ("-fmoe 0 and -no-fug 1 (llama-bench)" if bench else
             "-no-fmoe and -no-fug (llama-cli)")
    return (f"{', '.join(sorted(holders))} (Vulkan) hold layers ik_llama.cpp computes with "
            f"{' and '.join(sorted(ops))}, which its Vulkan backend lacks: the rpc-server will "
            f"abort mid-job (ggml-vulkan.cpp: Missing op)",
            f"add {flags} to job.extra_args, or run those servers on another backend")


def _flag_value(extra: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(extra[:-1]):
        if arg in flags:
            return extra[i + 1]
    return None


def flash_attention(asked: bool | None, flavour: str, model: ModelInfo,
                    devices: list[Device], p: Placement) -> tuple[bool, str, bool] | None:
    """Flash attention against the GPUs that hold layers: (what the build will use, what to
    say, whether it is a warning). Current mainline's "auto" asks only its local devices;
    CUDA and HIP have kernels for some head sizes only, and a CUDA rpc-server given a head
    size it has no kernel for aborts (fattn.cu: fatal error)."""
    head = model.head_dim_k
    holders = set(p.layer_device.values())
    lacking = [d for d in devices if d.name in holders and not fa_supported(d.backend, head)]
    if not lacking:
        return None
    local = [d.name for d in lacking if not d.name.startswith("RPC")]
    remote = [d.name for d in lacking if d.name.startswith("RPC")]
    if asked is None and flavour == "mainline" and local:
        return (False, f"flash attention \"auto\" turns off: {', '.join(local)} has no kernel "
                       f"for {head}-wide heads", False)
    if asked is False or (asked is None and flavour != "mainline"):
        return None  # off, or a build whose default and kernels were not checked
    names = ", ".join(remote or local)
    return (True, f"flash attention is on, and {names} has no flash-attention kernel for "
                  f"{head}-wide heads: its rpc-server will abort mid-job (fattn.cu: fatal "
                  f"error)", True)
