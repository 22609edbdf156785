"""The KV cache of models with sliding-window attention: which layers use the window, and
how many cells each flavour gives their cache (pure).

Mainline and seed-era builds keep two caches for such a model (llama_kv_cache_iswa,
llama_kv_cache_unified_iswa in b6110): the full-attention layers get the whole context, the
window layers a cache sized for the window plus one micro-batch. ik_llama.cpp keeps one cache
of the whole context for every layer and masks the window (its plan is the plain one).

Which layers use the window is each architecture's pattern (src/models/<arch>.cpp in
mainline, llm_load_hparams in b6110): n_pattern = 6 puts five window layers before each full
one. Current mainline takes ``<arch>.attention.sliding_window_pattern`` from the file when it
is there (an array of booleans, one per layer, or a number); b6110 does not read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpctui.plan.gguf import ModelInfo

#: arch -> (pattern, dense first, window when the file names none (0: the arch needs one),
#: whether the window is optional: without the key, or with 0, every layer is full)
PATTERNS: dict[str, tuple[int, bool, int, bool]] = {
    "gemma2": (2, False, 4096, False),
    "gemma3": (6, False, 0, True),
    "gpt-oss": (2, False, 0, False),
    "cohere2": (4, False, 0, False),
    "llama4": (4, False, 8192, True),  # chunked attention, sized as a window of 8192
}
#: Other architectures with a window (gemma3n, exaone4, olmo2, ...) are planned as if every layer
#: kept the whole context: never less than the truth (make_plan says so).


@dataclass(frozen=True)
class KvLayout:
    """The cells each layer's KV cache holds (every stream together)."""

    full: int  #: a full-attention layer's
    swa_layers: frozenset[int] = frozenset()
    swa: int = 0  #: a window layer's
    #: parallel sequences (n_seq_max): a recurrent layer keeps one state for each
    seqs: int = 1
    #: a recurrent layer's r and s rows in one tensor of the KV buffer (ik_llama.cpp's
    #: cache_s_l), not two of an RS buffer
    packed_state: bool = False
    #: the KV streams (one per sequence unless unified): the graph attends over one stream's
    #: cells, full // streams, per micro-batch row
    streams: int = 1

    def cells(self, il: int) -> int:
        return self.swa if il in self.swa_layers else self.full


def window_layers(model: ModelInfo, flavour: str) -> tuple[frozenset[int], int]:
    """(layers that use the window, window size) as the flavour reads the model."""
    known = PATTERNS.get(model.arch)
    if known is None or flavour == "ik":
        return frozenset(), 0
    n_pattern, dense_first, default, optional = known
    window = model.n_swa if model.n_swa is not None else default
    if optional and not window:
        return frozenset(), 0
    if model.arch == "llama4":
        window = 8192  # both builds fix the chunk size whatever the file says (0: none)
    pattern = model.swa_pattern if flavour == "mainline" else None
    if isinstance(pattern, tuple):
        return frozenset(il for il, on in enumerate(pattern[:model.n_layer]) if on), window
    if isinstance(pattern, int):
        n_pattern = pattern
    return frozenset(il for il in range(model.n_layer) if n_pattern == 0 or (
        il % n_pattern != 0 if dense_first else il % n_pattern < n_pattern - 1)), window


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def layout(model: ModelInfo, flavour: str, n_ctx: int, n_ubatch: int, seqs: int = 1,
           unified: bool = False, flash_attn: bool = False, swa_full: bool = False) -> KvLayout:
    """Each layer's cells for a context of n_ctx (as the build pads it), micro-batches of
    n_ubatch tokens and ``seqs`` parallel sequences, in one unified cache or a stream each.

    Mainline (llama-context.cpp, llama-kv-cache-iswa.cpp): a stream holds n_ctx (unified) or
    GGML_PAD(n_ctx / seqs, 256); the window layers' stream GGML_PAD(min(that, n_swa *
    (unified ? seqs : 1) + n_ubatch), 256). b6110 (llama-model.cpp create_memory,
    llama-kv-cache-unified-iswa.cpp): a stream GGML_PAD(ceil(n_ctx / seqs), n_pad) (n_pad 256
    with flash attention, else 32; from the padded n_ctx here, which is never less), the
    window layers' min(that, GGML_PAD(n_swa * (unified ? seqs : 1) + n_ubatch, n_pad)).
    ``swa_full`` (--swa-full) gives them a whole stream. ik_llama.cpp: one cache of n_ctx, and
    a recurrent layer's state in it (llama.cpp llama_kv_cache_init: qwen3next's cache_s_l)."""
    if flavour == "ik":
        return KvLayout(n_ctx, seqs=seqs, packed_state=True)
    streams = 1 if unified or seqs <= 1 else seqs
    if flavour == "mainline":
        pad = 256
        stream = n_ctx if streams == 1 else _pad(n_ctx // seqs, pad)
    else:
        pad = 256 if flash_attn else 32
        stream = n_ctx if streams == 1 else _pad(-(-n_ctx // seqs), pad)
    layers, window = window_layers(model, flavour)
    if not layers:
        return KvLayout(stream * streams, seqs=seqs, streams=streams)
    want = window * (seqs if unified else 1) + n_ubatch
    if swa_full:
        swa = stream
    elif flavour == "mainline":
        swa = _pad(min(stream, want), 256)
    else:
        swa = min(stream, _pad(want, pad))
    return KvLayout(stream * streams, layers, swa * streams, seqs, streams=streams)


def layer_cells(model: ModelInfo, n_ctx: int, kv: KvLayout | None) -> list[int]:
    """The KV cells of each layer (n_ctx each without a layout)."""
    return [kv.cells(il) if kv else n_ctx for il in range(model.n_layer)]
