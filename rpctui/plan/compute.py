"""Compute buffers: an estimate, from a rule fitted on recorded runs.

llama.cpp sizes each backend's compute buffer by reserving the worst-case graph (one
micro-batch of T tokens against the whole context); the peak of the graph allocator is not
written in the GGUF file. The estimate is a linear rule in the shapes that drive that peak,
fitted per flavour, device role and flash-attention setting on real loads recorded by
``bench/compute_fit.py`` (which prints the coefficients below and their error):

  T*n_embd, T*ffn (n_ff, or the used experts' width), T*n_ctx (the mask), T*n_ctx*n_head
  (attention scores, without flash attention), T*n_vocab (logits, on the output device)

all in f32, plus a constant. Roles: ``layers`` (a device holding repeating layers),
``output`` (the device holding the output layer) and ``host`` (the main node's CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rpctui.plan.gguf import ModelInfo

MIB = 1024 * 1024
ROLES = ("layers", "output", "host")
FEATURES = ("T*n_embd", "T*n_ff", "T*n_ff_exp*n_used", "T*n_ctx", "T*n_ctx*n_head", "T*n_vocab",
            "MiB")

#: flavour/role/fa -> one coefficient vector per phase of the layer graph (attention, then
#: feed-forward), over FEATURES in f32 elements (MiB for the constant); the estimate is the
#: larger of the two, as the allocator's peak is whichever phase holds more at once. The
#: output of `bench/compute_fit.py fit` on bench/compute_runs.json.
RULES: dict[str, tuple[tuple[float, ...], ...]] = {
    'ik/host/fa': (
        (1.0159, 0.0, 0.0, 0.4987, 0.0, 0.0, 0.0),
        (0.0606, 0.0, 0.2424, 0.4899, 0.0, 0.0, 0.0),
    ),
    'ik/host/nofa': (
        (0.985, 0.0, 0.0, 0.0157, 0.1255, 0.0, 0.0),
        (0.1425, 0.2736, 0.2053, 1.0186, 0.0, 0.0, 0.0059),
    ),
    'ik/layers/fa': (
        (8.0, 0.0, 0.0, 0.4933, 0.0, 0.0, 0.0067),
        (1.126, 3.378, 0.0, 0.2256, 0.0, 0.0, 0.1287),
    ),
    'ik/layers/nofa': (
        (3.6845, 0.0, 0.0, 0.1239, 0.9915, 0.0, 0.1023),
        (1.0923, 3.2769, 0.0, 1.2663, 0.0, 0.0, 0.0329),
    ),
    'ik/output/fa': (
        (2.0, 0.0, 0.0, 0.0133, 0.0, 0.9997, 0.0067),
        (0.2959, 0.568, 0.426, 0.0133, 0.0, 0.9997, 0.0067),
    ),
    'ik/output/nofa': (
        (1.98, 0.0, 0.0, 0.0, 0.0, 1.0004, 0.0001),
        (0.2929, 0.5624, 0.4218, 0.0, 0.0, 1.0004, 0.0001),
    ),
    'mainline+pp/host/fa': (
        (5.0379, 0.0, 0.0, 2.0352, 0.0, 0.0, 0.0),
        (0.7456, 1.4307, 1.0746, 2.0341, 0.0, 0.0, 0.0),
    ),
    'mainline+pp/host/nofa': (
        (9.0068, 0.0, 0.0, 0.0619, 0.4949, 0.0, 0.0026),
        (1.3323, 2.5581, 1.9185, 4.0208, 0.0, 0.0, 0.0026),
    ),
    'mainline+pp/layers/fa': (
        (15.9607, 0.0, 0.0, 2.0579, 0.0, 0.0, 0.0),
        (1.1177, 0.0, 4.4708, 2.0225, 0.0, 0.0, 0.0028),
    ),
    'mainline+pp/layers/nofa': (
        (14.629, 0.0, 0.0, 0.1605, 1.2839, 0.0, 0.0),
        (2.2237, 4.1403, 3.3745, 10.2225, 0.0, 0.0, 0.0),
    ),
    'mainline+pp/output/fa': (
        (4.9692, 0.0, 0.0, 2.0058, 0.0, 1.0009, 0.0008),
        (0.7351, 1.4114, 1.0585, 2.0058, 0.0, 1.0009, 0.0008),
    ),
    'mainline+pp/output/nofa': (
        (9.0519, 0.0, 0.0, 0.0621, 0.497, 0.9994, 0.0),
        (1.339, 2.571, 1.9282, 4.0383, 0.0, 0.9994, 0.0),
    ),
    'mainline/host/fa': (
        (2.0083, 0.0, 0.0, 0.5116, 0.0, 0.0, 0.0011),
        (0.1227, 0.0, 0.4906, 0.4721, 0.0, 0.0, 0.0001),
    ),
    'mainline/host/nofa': (
        (2.8904, 0.0, 0.0, 0.0162, 0.1293, 0.0, 0.0068),
        (0.3005, 0.9014, 0.0, 1.0043, 0.0, 0.0, 0.0),
    ),
    'mainline/layers/fa': (
        (11.9926, 0.0, 0.0, 0.5145, 0.0, 0.0, 0.0),
        (0.8746, 0.0, 3.4984, 0.5708, 0.0, 0.0, 0.0),
    ),
    'mainline/layers/nofa': (
        (7.6629, 0.0, 0.0, 0.1132, 0.9053, 0.0, 0.0),
        (1.2022, 2.1667, 1.9199, 7.1167, 0.0, 0.0, 0.0),
    ),
    'mainline/output/fa': (
        (1.01, 0.0, 0.0, 0.0018, 0.0, 0.9998, 0.0025),
        (0.1494, 0.2869, 0.2151, 0.0018, 0.0, 0.9998, 0.0025),
    ),
    'mainline/output/nofa': (
        (1.01, 0.0, 0.0, 0.0, 0.0002, 0.9998, 0.0025),
        (0.1494, 0.2869, 0.2151, 0.0018, 0.0, 0.9998, 0.0025),
    ),
    'seed-era/host/fa': (
        (0.8983, 0.0, 0.0, 1.0402, 0.0, 0.0, 0.0087),
        (0.1015, 0.3046, 0.0, 0.9957, 0.0, 0.0, 0.0),
    ),
    'seed-era/host/nofa': (
        (1.9784, 0.0, 0.0, 0.0156, 0.1251, 0.0, 0.0),
        (0.284, 0.5453, 0.409, 0.0, 0.0, 0.0, 0.01),
    ),
    'seed-era/layers/fa': (
        (12.295, 0.0, 0.0, 0.3309, 0.0, 0.0, 0.0),
        (0.8841, 0.0, 3.5365, 0.49, 0.0, 0.0, 0.0),
    ),
    'seed-era/layers/nofa': (
        (5.3408, 0.0, 0.0, 0.1276, 1.0206, 0.0, 0.2085),
        (2.0358, 3.509, 3.4645, 0.0, 0.0, 0.0, 0.0003),
    ),
    'seed-era/output/fa': (
        (1.01, 0.0, 0.0, 0.0028, 0.0, 0.9997, 0.0054),
        (0.1494, 0.2869, 0.2151, 0.0028, 0.0, 0.9997, 0.0054),
    ),
    'seed-era/output/nofa': (
        (0.0076, 0.0, 0.0, 0.0009, 0.0076, 0.9465, 0.2423),
        (0.2177, 0.4205, 0.3104, 0.0, 0.0, 0.9963, 0.0),
    ),
}
#: the worst relative error of each rule on the runs it was fitted on
ERRORS: dict[str, float] = {
    'ik/host/fa': 0.0066,
    'ik/host/nofa': 0.0027,
    'ik/layers/fa': 0.0417,
    'ik/layers/nofa': 0.0529,
    'ik/output/fa': 0.0,
    'ik/output/nofa': 0.0004,
    'mainline+pp/host/fa': 0.0066,
    'mainline+pp/host/nofa': 0.0017,
    'mainline+pp/layers/fa': 0.0055,
    'mainline+pp/layers/nofa': 0.0568,
    'mainline+pp/output/fa': 0.0009,
    'mainline+pp/output/nofa': 0.0009,
    'mainline/host/fa': 0.0184,
    'mainline/host/nofa': 0.0038,
    'mainline/layers/fa': 0.0057,
    'mainline/layers/nofa': 0.0942,
    'mainline/output/fa': 0.0003,
    'mainline/output/nofa': 0.0003,
    'seed-era/host/fa': 0.0079,
    'seed-era/host/nofa': 0.005,
    'seed-era/layers/fa': 0.0235,
    'seed-era/layers/nofa': 0.051,
    'seed-era/output/fa': 0.0002,
    'seed-era/output/nofa': 0.0113,
}
#: which features each phase may use: attention has no feed-forward width, feed-forward
#: no attention scores
PHASES = ((1, 0, 0, 1, 1, 1, 1), (1, 1, 1, 1, 0, 1, 1))


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


def padded_ctx(flavour: str, n: int, flash_attn: bool) -> int:
    """The context a build allocates for n tokens (its KV cache padding)."""
    if flavour == "mainline" or flavour not in ("seed-era", "ik"):
        return max(256, -(-n // 256) * 256)
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


def features(model: ModelInfo, tokens: int, n_ctx: int, flash_attn: bool, role: str
             ) -> list[float]:
    """The rule's inputs for one device, in f32 elements (MiB for the constant)."""
    n_head = model.n_head or model.n_embd // max(model.head_dim_k, 1)
    dense, experts = ffn_widths(model)
    t = float(tokens)
    return [t * model.n_embd, t * dense, t * experts, t * n_ctx,
            0.0 if flash_attn else t * n_ctx * n_head,
            t * model.n_vocab if role == "output" else 0.0, 1.0]


def _key(flavour: str, role: str, flash_attn: bool, pipeline: bool = False) -> str:
    return f"{flavour}{'+pp' if pipeline else ''}/{role}/{'fa' if flash_attn else 'nofa'}"


def pipeline_parallel(flavour: str, n_devices: int, all_offloaded: bool, overrides: bool,
                      kv_offload: bool = True) -> bool:
    """Whether current mainline turns on pipeline parallelism (src/llama-context.cpp), which
    keeps several copies of each split's inputs and so grows every compute buffer: more than
    one device, every layer and the output offloaded, no -ot rule, KV offloaded (and every
    device able to compute asynchronously, as RPC, CUDA and the CPU are)."""
    return (flavour == "mainline" and n_devices > 1 and all_offloaded and not overrides
            and kv_offload)


def estimate_mib(model: ModelInfo, flavour: str, tokens: int, n_ctx: int, flash_attn: bool,
                 role: str, pipeline: bool = False) -> float | None:
    """Estimated compute buffer in MiB, or None when no rule was fitted for this case."""
    rule = RULES.get(_key(flavour, role, flash_attn, pipeline))
    if rule is None:
        return None
    x = _scaled(features(model, tokens, n_ctx, flash_attn, role))
    return float(max(np.dot(coef, x) for coef in rule))


def error_of(flavour: str, role: str, flash_attn: bool, pipeline: bool = False) -> float | None:
    return ERRORS.get(_key(flavour, role, flash_attn, pipeline))


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


def _fit_max(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """A max of one plane per phase (max-affine regression by alternating assignment),
    minimising relative error; each phase sees only its features."""
    masks = [np.array(m, dtype=bool) for m in PHASES]
    # start: a sample belongs to the phase whose own feature (scores / ffn width) is larger
    side = (a[:, 4] <= a[:, 1] + a[:, 2]).astype(int)
    best: tuple[float, tuple[np.ndarray, ...]] | None = None
    for _ in range(20):
        planes = []
        for k, mask in enumerate(masks):
            rows = side == k if (side == k).any() else np.ones(len(y), dtype=bool)
            coef = np.zeros(a.shape[1])
            coef[mask] = _nnls(a[rows][:, mask] / y[rows, None], np.ones(int(rows.sum())))
            planes.append(coef)
        pred = np.max([a @ c for c in planes], axis=0)
        err = float(np.max(np.abs(pred - y) / y))
        if best is None or err < best[0]:
            best = (err, tuple(planes))
        new = np.argmax([a @ c for c in planes], axis=0)
        if (new == side).all():
            break
        side = new
    assert best is not None
    return best[1]


def fit_rule(samples: list[tuple[str, str, bool, bool, list[float], float]]
             ) -> tuple[dict[str, tuple[tuple[float, ...], ...]], dict[str, tuple[float, int]]]:
    """Rules per flavour/role/fa/pipeline from (flavour, role, fa, pipeline, features, actual
    MiB); and each rule's worst relative error with its sample count."""
    groups: dict[str, list[tuple[list[float], float]]] = {}
    for flavour, role, fa, pp, x, y in samples:
        if y > 0:
            groups.setdefault(_key(flavour, role, fa, pp), []).append((x, y))
    rules, errors = {}, {}
    for key, rows in groups.items():
        a = np.array([_scaled(x) for x, _ in rows])
        ys = np.array([y for _, y in rows])
        planes = _fit_max(a, ys)
        rules[key] = tuple(tuple(float(c) for c in p) for p in planes)
        pred = np.max([a @ c for c in planes], axis=0)
        errors[key] = (float(np.max(np.abs(pred - ys) / ys)), len(rows))
    return rules, errors
