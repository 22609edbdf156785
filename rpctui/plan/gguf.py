"""A GGUF model's shape from its headers alone: the metadata the planner needs and every
tensor's name, size, type and place, over all shards of a split model."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_SHARD = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class Tensor:
    name: str
    n_bytes: int
    layer: int | None  #: block index, or None for input/output/other tensors
    dims: tuple[int, ...] = ()  #: ne[0], ne[1], ... as ggml orders them
    offset: int = 0  #: where its data starts in its shard's data section
    shard: int = 0
    ttype: int = 0  #: its ggml type (GGMLQuantizationType)
    data_start: int = 0  #: where its shard's data section starts: the data is at data_start + offset


@dataclass(frozen=True)
class Ssm:
    """A Mamba-style layer's state (src/llama-hparams.cpp n_embd_r, n_embd_s): the last
    d_conv - 1 inputs of the convolution, and the scan's d_state x d_inner."""

    d_conv: int
    d_inner: int
    d_state: int
    n_group: int = 0  #: Mamba-2's groups of B and C (0 for Mamba-1)
    n_head: int = 0  #: Mamba-2's heads (ssm.time_step_rank)

    @property
    def r_floats(self) -> int:
        return max(self.d_conv - 1, 0) * (self.d_inner + 2 * self.n_group * self.d_state)

    @property
    def s_floats(self) -> int:
        return self.d_state * self.d_inner


#: every layer recurrent (llm_arch_is_recurrent) with a Mamba-style state
RECURRENT_ARCHS = frozenset({"mamba", "mamba2"})
#: hybrids whose recurrent layers are those with head_count_kv 0 (granite-hybrid.cpp, jamba.cpp)
HYBRID_ARCHS = frozenset({"granitehybrid", "jamba"})
#: hybrids of gated delta net (linear attention) and full attention layers, the recurrent ones
#: named by attention.recurrent_layers or else all but every full_attention_interval-th
#: (models/qwen3next.cpp load_arch_hparams); their state has Mamba-2's shape (n_embd_r, n_embd_s)
DELTA_NET_ARCHS = frozenset({"qwen3next"})
#: recurrent or hybrid architectures whose state the planner does not model (llama-arch.cpp)
UNMODELLED_STATE = frozenset({"rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "lfm2", "lfm2moe",
                              "falcon-h1", "nemotron_h", "nemotron_h_moe",
                              "qwen35", "qwen35moe", "plamo2", "kimi-linear", "minimax-01",
                              "bailingmoe3", "kimi-k3", "glm5-next", "qwen4exp", "deepseek4"})


@dataclass(frozen=True)
class ModelInfo:
    path: str
    arch: str
    n_layer: int
    n_embd: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    tensors: tuple[Tensor, ...]
    n_ctx_train: int = 0
    n_vocab: int = 0
    n_expert_used: int = 0
    #: multi-head latent attention (DeepSeek-style GGUFs with key_length_mla): the KV cache
    #: holds one latent row per token (key_length wide, head_count_kv 1)
    mla: bool = False
    n_head: int = 0  #: query heads
    #: whether the build keeps a V cache (current mainline keeps none for MLA models)
    v_cache: bool = True
    #: <arch>.attention.sliding_window (None: the file names none)
    n_swa: int | None = None
    #: <arch>.attention.sliding_window_pattern: one flag per layer, or every n-th layer full
    swa_pattern: tuple[bool, ...] | int | None = None
    #: head_count_kv per layer, when the file gives an array (0 for a hybrid's recurrent layers)
    n_head_kv_layers: tuple[int, ...] | None = None
    #: layers that keep a recurrent state instead of a KV cache (Mamba-style), and its shape
    recurrent_layers: frozenset[int] = frozenset()
    ssm: Ssm | None = None

    def head_kv(self, il: int) -> int:
        """Layer il's KV heads (0: a recurrent layer, which has no KV cache)."""
        if il in self.recurrent_layers:
            return 0
        if self.n_head_kv_layers is not None and il < len(self.n_head_kv_layers):
            return self.n_head_kv_layers[il]
        return self.n_head_kv

    @property
    def tied(self) -> bool:
        return not any(t.name == "output.weight" for t in self.tensors)

    @property
    def size_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def shards(path: str | Path) -> list[Path]:
    """Every shard of a split model (given any one of them), or just the file."""
    p = Path(path)
    m = _SHARD.match(p.name)
    if not m:
        return [p]
    total = int(m.group(3))
    return [p.with_name(f"{m.group(1)}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]


_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}  # GGUF value types -> struct codes (8 = string, 9 = array)


class ModelFileError(ValueError):
    """A model file whose GGUF header cannot be read: not GGUF, cut short, or damaged."""


#: The most of a file read as its header: a length or count that would take the header past
#: this is taken for damage, not read. Real headers are a few MiB (a 262k-token vocabulary
#: with its merges is about 15 MiB).
HEADER_MAX_BYTES = 64 << 20
MAX_DIMS = 4  #: GGML_MAX_DIMS
#: Bounds on the numbers the planner loops or multiplies over; a header past them is damaged.
_PLAUSIBLE = {"block_count": 1 << 16, "embedding_length": 1 << 20,
              "attention.head_count": 1 << 16, "attention.head_count_kv": 1 << 16,
              "attention.key_length": 1 << 16, "attention.value_length": 1 << 16,
              "context_length": 1 << 31, "vocab_size": 1 << 24, "expert_used_count": 1 << 12,
              "attention.sliding_window": 1 << 31, "ssm.conv_kernel": 1 << 10,
              "ssm.inner_size": 1 << 20, "ssm.state_size": 1 << 16, "ssm.group_count": 1 << 12,
              "ssm.time_step_rank": 1 << 16, "full_attention_interval": 1 << 16}


class _Header:
    """A GGUF file's metadata and tensor table, read straight from its first bytes.

    gguf.GGUFReader parses every array (a 150k-token vocabulary takes seconds); the planner
    needs a handful of numbers and the tensor table, so arrays it does not need are skipped.
    """

    def __init__(self, path: Path, fh: BinaryIO | None = None) -> None:
        import struct

        self.fields: dict[str, object] = {}
        self.lengths: dict[str, int] = {}  #: element counts of the arrays that were skipped
        self.tensors: list[tuple[str, list[int], int, int]] = []
        with fh or path.open("rb") as fh:
            data = fh.read(1 << 20)
            pos = 0

            def need(n: int) -> None:
                nonlocal data
                if pos + n > HEADER_MAX_BYTES:
                    raise ModelFileError(
                        f"{path} is damaged or not a model: its GGUF header asks for {n} bytes "
                        f"at byte {pos}, past the {HEADER_MAX_BYTES >> 20} MiB any header takes")
                while pos + n > len(data):
                    more = fh.read(max(n, 1 << 20))
                    if not more:
                        raise ModelFileError(f"{path} is cut short: its GGUF header goes on "
                                             f"past the file's end ({len(data)} bytes)")
                    data += more

            def take(fmt: str) -> tuple[Any, ...]:
                nonlocal pos
                size = struct.calcsize("<" + fmt)
                need(size)
                out = struct.unpack_from("<" + fmt, data, pos)
                pos += size
                return out

            def string() -> str:
                nonlocal pos
                (n,) = take("Q")
                need(n)
                text = data[pos:pos + n].decode("utf-8", "replace")
                pos += n
                return text

            def value(vtype: int, keep: bool, key: str = "") -> object:
                nonlocal pos
                if vtype == 8:
                    return string()
                if vtype != 9:
                    if vtype not in _SCALAR:
                        raise ModelFileError(f"{path} is damaged: value type {vtype} at byte "
                                             f"{pos} is not a GGUF type")
                    return take(_SCALAR[vtype])[0]
                (etype, count) = take("IQ")
                if etype == 9:
                    raise ModelFileError(f"{path} is damaged: an array of arrays at byte {pos} "
                                         f"(llama.cpp reads none)")
                self.lengths[key] = count
                if etype in _SCALAR and not keep:
                    size = struct.calcsize(_SCALAR[etype])
                    need(size * count)
                    pos += size * count
                    return None
                items = [value(etype, keep) for _ in range(count)]
                return items if keep else None

            magic = take("4s")[0]
            if magic != b"GGUF":
                raise ModelFileError(f"{path} is not a GGUF file")
            _version, n_tensors, n_kv = take("IQQ")
            for _ in range(n_kv):
                key = string()
                (vtype,) = take("I")
                keep = not key.startswith("tokenizer.")
                self.fields[key] = value(vtype, keep, key)
            for _ in range(n_tensors):
                name = string()
                (n_dims,) = take("I")
                if n_dims > MAX_DIMS:
                    raise ModelFileError(f"{path} is damaged: tensor {name!r} has {n_dims} "
                                         f"dimensions (ggml has at most {MAX_DIMS})")
                dims = list(take("Q" * n_dims))
                (ttype,) = take("I")
                (offset,) = take("Q")
                self.tensors.append((name, dims, ttype, offset))
            align = self.fields.get("general.alignment")
            align = align if isinstance(align, int) and align > 0 else 32
            #: where the tensor data starts: the header's end, aligned
            self.data_start = -(-pos // align) * align


def type_block(ttype: int | str) -> tuple[int, int]:
    """(values per block, bytes per block) of a ggml type, by number or name (f16, q8_0)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    if isinstance(ttype, str):
        return GGML_QUANT_SIZES[GGMLQuantizationType[ttype.upper()]]
    return GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]


def type_bytes(ttype: int | str, n: int) -> int:
    """ggml_row_size: bytes of n values of a ggml type."""
    block, size = type_block(ttype)
    return n // block * size


def read_model(path: str | Path, opener: Callable[[Path], BinaryIO] | None = None,
               sizes: dict[Path, int] | None = None) -> ModelInfo:
    """Tensor names and sizes from the GGUF headers of every shard (no weights are read).
    ``opener`` gives the start of a file that is not on this machine, ``sizes`` the whole
    files' sizes there; a file whose tensors reach past its end is a ModelFileError."""
    tensors: list[Tensor] = []
    meta: _Header | None = None
    for i, shard in enumerate(shards(path)):
        header = _Header(shard, opener(shard) if opener else None)
        meta = meta or header
        end = header.data_start
        for name, dims, ttype, offset in header.tensors:
            m = _BLOCK.match(name)
            try:
                nbytes = type_bytes(ttype, math.prod(dims))
            except (ValueError, KeyError):
                raise ModelFileError(f"{shard} is damaged: tensor {name!r} has type {ttype}, "
                                     f"which ggml does not have") from None
            end = max(end, header.data_start + offset + nbytes)
            tensors.append(Tensor(name, nbytes, int(m.group(1)) if m else None, tuple(dims),
                                  offset, i, ttype, header.data_start))
        size = (sizes or {}).get(shard) if opener else shard.stat().st_size
        if size is not None and size < end:
            raise ModelFileError(f"{shard} is cut short: its tensors end at byte {end}, the "
                                 f"file has {size}")
    assert meta is not None
    f = meta.fields

    def first(key: str) -> int | None:
        v = f.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, float):
            v = int(v) if math.isfinite(v) else None
        if not isinstance(v, int) or isinstance(v, bool):
            return None
        limit = _PLAUSIBLE.get(key.removeprefix(f"{arch}."))
        if limit is not None and not 0 <= v <= limit:
            raise ModelFileError(f"{path} is damaged or not a model this planner knows: "
                                 f"{key} = {v} (expected 0 to {limit})")
        return v

    arch = str(f.get("general.architecture") or "llama")
    n_layer = first(f"{arch}.block_count") or 0
    n_embd = first(f"{arch}.embedding_length") or 0
    n_head = first(f"{arch}.attention.head_count") or 1
    kv = first(f"{arch}.attention.head_count_kv") or n_head
    kv_layers = _layer_ints(f.get(f"{arch}.attention.head_count_kv"), n_layer, path)
    if kv_layers is not None:
        kv = max(kv_layers) or n_head
    recurrent: frozenset[int] = frozenset()
    if arch in RECURRENT_ARCHS:
        recurrent = frozenset(range(n_layer))
    elif arch in HYBRID_ARCHS and kv_layers is not None:
        recurrent = frozenset(il for il, h in enumerate(kv_layers) if h == 0)
    elif arch in DELTA_NET_ARCHS:
        recurrent = _delta_net_layers(f.get(f"{arch}.attention.recurrent_layers"),
                                      first(f"{arch}.full_attention_interval") or 4, n_layer)
    ssm = None
    if recurrent:
        ssm = Ssm(first(f"{arch}.ssm.conv_kernel") or 0, first(f"{arch}.ssm.inner_size") or 0,
                  first(f"{arch}.ssm.state_size") or 0, first(f"{arch}.ssm.group_count") or 0,
                  first(f"{arch}.ssm.time_step_rank") or 0)
    key_len = first(f"{arch}.attention.key_length")
    val_len = first(f"{arch}.attention.value_length")
    head_dim = n_embd // n_head
    vocab = first(f"{arch}.vocab_size") or meta.lengths.get("tokenizer.ggml.tokens", 0)
    return ModelInfo(str(path), arch, n_layer, n_embd, kv, int(key_len or head_dim),
                     int(val_len or head_dim), tuple(tensors),
                     n_ctx_train=first(f"{arch}.context_length") or 0, n_vocab=vocab,
                     n_expert_used=first(f"{arch}.expert_used_count") or 0,
                     mla=bool(first(f"{arch}.attention.key_length_mla")
                              and first(f"{arch}.attention.value_length_mla")),
                     n_head=n_head, n_swa=first(f"{arch}.attention.sliding_window"),
                     swa_pattern=_pattern(f.get(f"{arch}.attention.sliding_window_pattern")),
                     n_head_kv_layers=kv_layers, recurrent_layers=recurrent, ssm=ssm)


def _delta_net_layers(flags: object, interval: int, n_layer: int) -> frozenset[int]:
    """A delta-net hybrid's recurrent layers: the file's per-layer flags, or every layer but
    each interval-th."""
    if isinstance(flags, list) and len(flags) >= n_layer:
        return frozenset(il for il in range(n_layer) if flags[il])
    return frozenset(il for il in range(n_layer) if (il + 1) % max(interval, 1) != 0)


def _layer_ints(value: object, n_layer: int, path: str | Path) -> tuple[int, ...] | None:
    """A per-layer array of head counts (one per layer), or None."""
    if not isinstance(value, list) or len(value) != n_layer:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 16
               for v in value):
        raise ModelFileError(f"{path} is damaged: its per-layer head_count_kv holds values "
                             f"other than whole numbers from 0 to 65536")
    return tuple(value)


def _pattern(value: object) -> tuple[bool, ...] | int | None:
    if isinstance(value, list):
        return tuple(bool(v) for v in value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
