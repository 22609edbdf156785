"""Compute buffers: an estimate, from a rule fitted on recorded runs.

llama.cpp sizes each backend's compute buffer by reserving the worst-case graph (one
micro-batch of T tokens against the whole context); the peak of the graph allocator is not
written in the GGUF file. The estimate is a linear rule in the shapes that drive that peak,
fitted per flavour, device role and flash-attention setting on real loads recorded by
``bench/compute_fit.py`` (which prints the coefficients below and their error):

  T*n_embd, T*ffn (n_ff, or the used experts' width), T*n_ctx (the mask), T*n_ctx*n_head
  (attention scores, without flash attention), T*n_vocab (logits, on the output device),
  and for Mamba-style layers T*(in_proj + conv width) and one sequence's state

all in f32, plus a constant. Roles: ``layers`` (a device holding repeating layers),
``output`` (the device holding the output layer) and ``host`` (the main node's CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rpctui.plan.compute_rules import DOMAIN, OVER, RULES
from rpctui.plan.gguf import DELTA_NET_ARCHS

if TYPE_CHECKING:
    from rpctui.plan.gguf import ModelInfo

MIB = 1024 * 1024
ROLES = ("layers", "output", "host")
FEATURES = ("T*n_embd", "T*n_ff", "T*n_ff_exp*n_used", "T*n_ctx", "T*n_ctx*n_head", "T*n_vocab",
            "T*n_ssm", "n_state", "MiB")

#: the rules themselves (coefficients, their error, the data's extent): compute_rules.py,
#: written by `bench/compute_fit.py fit --write`
#: what an estimate outside the fitted data gets on top (a shape the rule cannot vouch for)
MARGIN = 0.25
#: added to every estimate: graph details the features do not see (held-out loads on the rig
#: came out up to 0.1 MiB above the fitted rule: an output device with fewer layers, a
#: window model's host)
PAD_MIB = 0.25
#: how far past the largest fitted value of a feature an estimate may go before it is outside
REACH = 2.0
#: which features each phase may use: attention has no feed-forward width, feed-forward
#: no attention scores
#: (a recurrent layer's mixer may fall in either)
PHASES = ((1, 0, 0, 1, 1, 1, 1, 1, 1), (1, 1, 1, 1, 0, 1, 1, 1, 1))


def backend_of(device: str) -> str:
    """The backend behind a device name (CUDA0 -> cuda, Vulkan1 -> vulkan, CPU -> cpu)."""
    name = device.rstrip("0123456789").lower()
    return {"rocm": "rocm", "hip": "rocm", "cuda": "cuda", "vulkan": "vulkan",
            "metal": "metal", "sycl": "sycl"}.get(name, "cpu")


#: head sizes with a CUDA flash-attention kernel (ggml-cuda/fattn.cu, current mainline); HIP
#: builds the same code
CUDA_FA_HEAD_DIMS = frozenset({40, 64, 72, 80, 96, 112, 128, 192, 256, 320, 512, 576})


def fa_supported(backend: str, head_dim: int) -> bool:
    return head_dim in CUDA_FA_HEAD_DIMS if backend in ("cuda", "rocm") else True


def default_flash_attn(flavour: str) -> bool:
    """What each flavour does when -fa is not given (mainline's auto turns it on for the
    CPU, RPC, CUDA and Vulkan backends; b6110's llama-bench defaults to off)."""
    return flavour != "seed-era"


def padded_ctx(flavour: str, n: int, flash_attn: bool, recurrent_only: bool = False) -> int:
    """The context a build allocates for n tokens (its KV cache padding). b6110 pads it where
    it makes a KV cache (llama-model.cpp create_memory): a model whose every layer is
    recurrent keeps n."""
    if flavour == "mainline" or flavour not in ("seed-era", "ik"):
        return max(256, -(-n // 256) * 256)
    if recurrent_only and flavour == "seed-era":
        return n
    pad = 256 if flash_attn else 32
    return -(-n // pad) * pad


def reserve_tokens(flavour: str, n_tokens: int, n_ctx: int, ubatch: int | None,
                   batch: int | None) -> int:
    """T, the micro-batch of the worst-case graph: min(n_ctx, n_ubatch). Mainline caps the
    batch at the tokens asked for; seed-era too, but raises it to at least 64
    (GGML_KQ_MASK_PAD); ik_llama.cpp caps it at the padded context."""
    n_batch = min(batch or 2048, n_ctx if flavour == "ik" else n_tokens)
    if flavour == "seed-era":
        n_batch = max(n_batch, 64)
    return min(n_ctx, ubatch or 512, n_batch)


def ffn_widths(model: ModelInfo) -> tuple[int, int]:
    """Feed-forward activations per token: (dense n_ff, expert n_ff times experts used)."""
    dense = [t.dims[1] for t in model.tensors if ".ffn_up." in t.name and len(t.dims) > 1]
    experts = [t.dims[1] for t in model.tensors if ".ffn_up_exps." in t.name and len(t.dims) > 1]
    return (max(dense, default=0), max(experts, default=0) * max(model.n_expert_used, 1)
            if experts else 0)


def ssm_widths(model: ModelInfo) -> tuple[int, int]:
    """A recurrent layer's activations per token (in_proj's output and the convolution's
    input) and one sequence's state (floats); (0, 0) without recurrent layers."""
    if model.ssm is None or not model.recurrent_layers:
        return 0, 0
    # in_proj's output: Mamba's ssm_in, or a delta net's attn_qkv and attn_gate together
    proj = max((t.dims[1] for t in model.tensors if ".ssm_in." in t.name and len(t.dims) > 1),
               default=0)
    if not proj:
        proj = max((sum(t.dims[1] for t in model.tensors if len(t.dims) > 1 and t.name in
                        (f"blk.{il}.attn_qkv.weight", f"blk.{il}.attn_gate.weight"))
                    for il in model.recurrent_layers), default=0)
    conv = model.ssm.d_inner + 2 * model.ssm.n_group * model.ssm.d_state
    return proj + conv, model.ssm.r_floats + model.ssm.s_floats


def features(model: ModelInfo, tokens: int, n_ctx: int, flash_attn: bool, role: str,
             swa_cells: int = 0) -> list[float]:
    """The rule's inputs for one device, in f32 elements (MiB for the constant). A model with
    sliding-window layers has a second mask, over its window cache's ``swa_cells``: it joins
    the mask term. A recurrent model's layers add their activations and their state."""
    n_head = model.n_head or model.n_embd // max(model.head_dim_k, 1)
    dense, experts = ffn_widths(model)
    ssm, state = ssm_widths(model)
    t = float(tokens)
    return [t * model.n_embd, t * dense, t * experts, t * (n_ctx + swa_cells),
            0.0 if flash_attn else t * n_ctx * n_head,
            t * model.n_vocab if role == "output" else 0.0, t * ssm, float(state), 1.0]


def family(model: ModelInfo) -> str:
    """Which rules a model's compute buffers take: "" (attention layers only), "ssm" (with
    Mamba-style layers) or "gdn" (with gated delta net layers, Qwen3-Next's)."""
    if not ssm_widths(model)[0]:
        return ""
    return "gdn" if model.arch in DELTA_NET_ARCHS else "ssm"


def _key(flavour: str, role: str, flash_attn: bool, pipeline: bool = False,
         kind: str = "") -> str:
    """A rule's name. Each family of recurrent layers has rules of its own: fitted together
    with the attention models' (or the delta nets' with Mamba's), they pulled the others far
    over."""
    return (f"{flavour}{'+pp' if pipeline else ''}{'+' + kind if kind else ''}/{role}/"
            f"{'fa' if flash_attn else 'nofa'}")


def pipeline_parallel(flavour: str, n_devices: int, all_offloaded: bool, overrides: bool,
                      kv_offload: bool = True) -> bool:
    """Whether current mainline turns on pipeline parallelism (src/llama-context.cpp), which
    keeps several copies of each split's inputs and so grows every compute buffer: more than
    one device, every layer and the output offloaded, no -ot rule, KV offloaded (and every
    device able to compute asynchronously, as RPC, CUDA and the CPU are)."""
    return (flavour == "mainline" and n_devices > 1 and all_offloaded and not overrides
            and kv_offload)


def estimate_mib(model: ModelInfo, flavour: str, tokens: int, n_ctx: int, flash_attn: bool,
                 role: str, pipeline: bool = False, swa_cells: int = 0) -> float | None:
    """Estimated compute buffer in MiB, or None when no rule was fitted for this case. The
    rule is fitted from above (never below a recorded allocation); outside its data it adds
    MARGIN (``doubt`` says why)."""
    x = features(model, tokens, n_ctx, flash_attn, role, swa_cells)
    kind = family(model)
    mib = rule_mib(flavour, role, flash_attn, pipeline, x, kind)
    if mib is None:
        return None
    key = _key(flavour, role, flash_attn, pipeline, kind)
    return PAD_MIB + (mib * (1 + MARGIN) if _outside(key, _scaled(x), model) else mib)


def rule_mib(flavour: str, role: str, flash_attn: bool, pipeline: bool, x: list[float],
             kind: str = "") -> float | None:
    """The fitted rule (of the model ``family``) at the features ``x`` (no margin), or None
    without a rule."""
    rule = RULES.get(_key(flavour, role, flash_attn, pipeline, kind))
    if rule is None:
        return None
    return float(max(np.dot(coef, _scaled(x)) for coef in rule))


def doubt(model: ModelInfo, flavour: str, tokens: int, n_ctx: int, flash_attn: bool,
          role: str, pipeline: bool = False, swa_cells: int = 0) -> str | None:
    """Why an estimate is outside the rule's data (and got MARGIN), or None."""
    x = features(model, tokens, n_ctx, flash_attn, role, swa_cells)
    key = _key(flavour, role, flash_attn, pipeline, family(model))
    if key not in RULES:
        return None
    return _outside(key, _scaled(x), model)


def _outside(key: str, x: np.ndarray, model: ModelInfo) -> str | None:
    if model.mla:
        # on the generated DeepSeek-style model the fitted rule was 3 to 22 % off
        return "latent attention (MLA) is not in the fitted data"
    top = DOMAIN.get(key)
    if top is None:
        return None
    for name, value, most in zip(FEATURES, x, top, strict=True):
        if value > REACH * most + 1e-9:
            return (f"{name} is {value / most:.0f}x the largest fitted" if most else
                    f"{name} was never in the fitted data")
    return None


def error_of(flavour: str, role: str, flash_attn: bool, pipeline: bool = False,
             kind: str = "") -> float | None:
    """The rule's worst over-estimate on its data (relative); it is never under."""
    return OVER.get(_key(flavour, role, flash_attn, pipeline, kind))


def _scaled(x: list[float]) -> np.ndarray:
    """Features in MiB of f32 (so the coefficients are element counts), the constant as 1."""
    return np.array([v * 4 / MIB for v in x[:-1]] + [1.0])


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with coefficients of 0 or more: drop the most negative and refit."""
    active = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return coef


def _fit_max(a: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
             ) -> tuple[np.ndarray, ...]:
    """A max of one plane per phase (max-affine regression by alternating assignment),
    minimising relative error (each sample weighted by ``w``); each phase sees only its
    features."""
    w = np.ones(len(y)) if w is None else w
    masks = [np.array(m, dtype=bool) for m in PHASES]
    # start: a sample belongs to the phase whose own feature (scores / ffn width) is larger
    side = (a[:, 4] <= a[:, 1] + a[:, 2]).astype(int)
    best: tuple[float, tuple[np.ndarray, ...]] | None = None
    for _ in range(20):
        planes = []
        for k, mask in enumerate(masks):
            rows = side == k if (side == k).any() else np.ones(len(y), dtype=bool)
            coef = np.zeros(a.shape[1])
            coef[mask] = _nnls(a[rows][:, mask] * (w[rows] / y[rows])[:, None], w[rows])
            planes.append(coef)
        pred = np.max([a @ c for c in planes], axis=0)
        err = float(np.max(w * np.abs(pred - y) / y))
        if best is None or err < best[0]:
            best = (err, tuple(planes))
        new = np.argmax([a @ c for c in planes], axis=0)
        if (new == side).all():
            break
        side = new
    assert best is not None
    return best[1]


def _fit_above(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """The max-affine fit pushed up onto the data: samples it falls short of weigh more on
    each pass (an asymmetric least squares), then every plane is raised by the last shortfall,
    so no sample is above the rule."""
    w = np.ones(len(y))
    planes = _fit_max(a, y)
    for _ in range(12):
        pred = np.max([a @ c for c in planes], axis=0)
        short = pred < y
        if not short.any():
            break
        w = np.where(short, w * 3.0, w)
        planes = _fit_max(a, y, w)
    pred = np.max([a @ c for c in planes], axis=0)
    lift = max(1.0, float(np.max(y / pred)))
    return tuple(p * lift for p in planes)


#: one recorded compute buffer: (flavour, role, flash attention, pipeline parallelism, model
#: family, features, allocated MiB)
Sample = tuple[str, str, bool, bool, str, list[float], float]


def fit_rule(samples: list[Sample]
             ) -> tuple[dict[str, tuple[tuple[float, ...], ...]], dict[str, tuple[float, int]],
                        dict[str, tuple[float, ...]]]:
    """Rules per flavour/role/fa/pipeline/family from recorded buffers; each rule's worst
    over-estimate with its sample count; each feature's largest value in the rule's data."""
    groups: dict[str, list[tuple[list[float], float]]] = {}
    for flavour, role, fa, pp, kind, x, y in samples:
        if y > 0:
            groups.setdefault(_key(flavour, role, fa, pp, kind), []).append((x, y))
    rules, over, domain = {}, {}, {}
    for key, rows in groups.items():
        a = np.array([_scaled(x) for x, _ in rows])
        ys = np.array([y for _, y in rows])
        planes = _fit_above(a, ys)
        rules[key] = tuple(tuple(float(c) for c in p) for p in planes)
        pred = np.max([a @ c for c in planes], axis=0)
        over[key] = (float(np.max((pred - ys) / ys)), len(rows))
        domain[key] = tuple(float(v) for v in a.max(axis=0))
    return rules, over, domain
