"""A tiny but real GGUF model: random F16 weights, a real tokenizer, loads in every build.

With a fixed seed the file is byte-identical each time, so it is generated, never
committed. Random weights give nonsense text and perfectly valid timings and
memory figures, which is all the demo and the tests need. The tokenizer is
copied from the vocab-only models that llama.cpp's source tree ships.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpctui.paths import cache_dir

VOCAB_FILE = "ggml-vocab-llama-spm.gguf"
MAMBA2_ARCHS = ("mamba2", "granitehybrid")  #: the generated shapes with Mamba-2 layers


@dataclass(frozen=True)
class TinySpec:
    """The shape of a generated model."""

    layers: int = 8
    embd: int = 256
    ff: int = 768
    heads: int = 8
    kv_heads: int = 4
    ctx: int = 2048
    tied_embeddings: bool = False  #: no output.weight: token_embd is reused for the output
    experts: int = 0  #: a mixture of experts (Mixtral-style llama) when more than 0
    experts_used: int = 2
    quant: str = ""  #: a ggml type for the weight matrices (e.g. q8_0) instead of f16
    #: "deepseek2": multi-head latent attention (kv_lora_rank 64, 16 rope dims), one dense
    #: leading layer, then experts plus a shared expert, as DeepSeek V3/R1 GGUFs have them
    arch: str = "llama"
    #: split into shards of at most this many tensors (as convert_hf_to_gguf.py
    #: --split-max-tensors writes them, through the same gguf writer)
    split_tensors: int = 0
    #: "gemma3" (five layers in six use the window), "gemma2" and "gpt-oss" (every other one)
    #: with a sliding window: llama.cpp keeps two KV caches, so each device that holds layers
    #: prints two KV buffers
    sliding_window: int = 0
    #: "mamba2" (every layer a Mamba-2 mixer, no attention) and "granitehybrid" (Mamba-2
    #: layers with attention at ``attention_layers``, as IBM's Granite 4.0-H): the recurrent
    #: layers keep a state per sequence (llama.cpp's RS buffer) instead of a KV cache
    attention_layers: tuple[int, ...] = ()
    ssm_state: int = 64  #: d_state of the Mamba-2 layers (d_inner is 2 n_embd)
    ssm_groups: int = 1
    shared_ff: int = 0  #: a shared expert of this width beside the routed ones (granitehybrid)
    #: "qwen3next": gated delta net layers (linear attention, Qwen3-Next's) with full
    #: attention every ``full_attention_interval``-th layer; ssm_state is the heads' width,
    #: ssm_groups the key heads and ``ssm_v_heads`` the value heads
    full_attention_interval: int = 4
    ssm_v_heads: int = 0
    #: headers only, the data a hole (a sparse file of zeros): the shapes of real models, tens
    #: of GB each, written in a second and loaded as they are (issue 15's scale check)
    sparse: bool = False
    seed: int = 42

    @property
    def stem(self) -> str:
        tied = "-tied" if self.tied_embeddings else ""
        moe = f"-{self.experts}x{self.experts_used}moe" if self.experts else ""
        quant = f"-{self.quant}" if self.quant else ""
        quant += f"-split{self.split_tensors}" if self.split_tensors else ""
        quant += f"-swa{self.sliding_window}" if self.sliding_window else ""
        if self.arch in MAMBA2_ARCHS:
            attn = "".join(f"a{i}" for i in self.attention_layers)
            quant += f"-ssm{self.ssm_state}g{self.ssm_groups}{attn}"
        if self.arch == "qwen3next":
            quant += (f"-gdn{self.ssm_state}k{self.ssm_groups}v{self.ssm_v_heads}"
                      f"i{self.full_attention_interval}")
        quant += f"-sh{self.shared_ff}" if self.shared_ff else ""
        quant += "-sparse" if self.sparse else ""
        return (f"tiny-{self.arch}-{self.layers}L-{self.embd}e-{self.ff}f-{self.heads}h-"
                f"{self.kv_heads}kv{tied}{moe}{quant}-s{self.seed}")


BUILTIN: dict[str, TinySpec] = {
    "tiny": TinySpec(),
    "tiny-tied": TinySpec(tied_embeddings=True),
    "small": TinySpec(layers=16, embd=512, ff=1536),
    "tiny-moe": TinySpec(ff=512, experts=4),
    # quantized, with rows whose sizes are not multiples of 128 bytes nor of 512 values:
    # where GPU backends pad (CUDA: 128-byte alignment, quantized rows to 512 values)
    "tiny-q8": TinySpec(embd=288, ff=800, heads=8, kv_heads=4, quant="q8_0"),
    "tiny-mla": TinySpec(layers=6, ff=512, kv_heads=1, experts=4, arch="deepseek2"),
    "tiny-split": TinySpec(split_tensors=30),  # three shards
    "tiny-swa": TinySpec(arch="gemma3", sliding_window=64, tied_embeddings=True),
    "tiny-gemma2": TinySpec(arch="gemma2", sliding_window=64, tied_embeddings=True),
    # gpt-oss: window layers interleaved with full ones, attention sinks, biased experts
    "tiny-gpt-oss": TinySpec(arch="gpt-oss", ff=512, experts=4, sliding_window=64),
    # recurrent: Mamba-2 layers only; and a hybrid of Mamba-2 and attention layers with routed
    # and shared experts (Granite 4.0-H's shape)
    "tiny-mamba2": TinySpec(arch="mamba2", ff=0, heads=0, kv_heads=0, tied_embeddings=True),
    "tiny-granite-hybrid": TinySpec(arch="granitehybrid", ff=256, experts=4, shared_ff=384,
                                    attention_layers=(2, 6), ssm_state=128),
    # Qwen3-Next: gated delta net layers, full attention (gated queries) on every fourth,
    # routed experts with a gated shared expert, partial rotary embedding
    "tiny-qwen3next": TinySpec(arch="qwen3next", ff=128, heads=8, kv_heads=2, experts=4,
                               shared_ff=256, ssm_state=32, ssm_groups=2, ssm_v_heads=4),
    # a second delta-net shape for the compute rule: wider, heads of 64, more experts, full
    # attention every third layer
    "qwen3next-wide": TinySpec(arch="qwen3next", embd=384, ff=192, heads=6, kv_heads=2,
                               experts=8, shared_ff=512, ssm_state=64, ssm_groups=2,
                               ssm_v_heads=4, full_attention_interval=3),
    # every weight matrix above llama.cpp's 10 MiB tensor-cache threshold (830 MB): what an
    # rpc-server's cache (-c) holds, for the cache-fill tests and benchmarks
    "wide": TinySpec(layers=2, embd=3072, ff=8192, heads=24, kv_heads=24),
    # the shapes of Llama 3 8B and 70B and Mixtral 8x7B in Q8_0 (with this 32000-token
    # vocabulary), all zeros: 7.6, 70 and 47 GB that take no disk
    "shape-8b-q8": TinySpec(layers=32, embd=4096, ff=14336, heads=32, kv_heads=8, ctx=8192,
                            quant="q8_0", sparse=True),
    "shape-70b-q8": TinySpec(layers=80, embd=8192, ff=28672, heads=64, kv_heads=8, ctx=8192,
                             quant="q8_0", sparse=True),
    "shape-8x7b-q8": TinySpec(layers=32, embd=4096, ff=14336, heads=32, kv_heads=8, ctx=8192,
                              experts=8, quant="q8_0", sparse=True),
}


def vocab_path() -> Path:
    """The llama SPM vocab from any unpacked llama.cpp sdist in the cache (downloaded if none)."""
    src = cache_dir() / "src"
    for found in sorted(src.glob(f"*/vendor/*/models/{VOCAB_FILE}")):
        return found
    from rpctui.llama.build import DEFAULT_FLAVOUR, FLAVOURS, sdist_path

    flavour = FLAVOURS[DEFAULT_FLAVOUR]
    archive = sdist_path(flavour, lambda _m, _f: None)
    member = f"{flavour.sdist_stem}/{flavour.vendor}/models/{VOCAB_FILE}"
    target = cache_dir() / "vocab" / VOCAB_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        fh = tar.extractfile(member)
        assert fh is not None
        target.write_bytes(fh.read())
    return target


def ensure_model(name: str = "tiny", folder: Path | None = None) -> Path:
    """Path of the generated model ``name`` (see BUILTIN), writing it first when absent."""
    spec = BUILTIN[name]
    folder = folder or cache_dir() / "models"
    path = folder / f"{spec.stem}.gguf"
    if spec.split_tensors:
        first = sorted(folder.glob(f"{spec.stem}-00001-of-*.gguf"))
        if first:
            return first[0]
        return write_model(spec, path)
    if not path.is_file():
        write_model(spec, path)
    return path


def write_model(spec: TinySpec, path: Path) -> Path:
    import gguf

    vocab = gguf.GGUFReader(vocab_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".tmp{os.getpid()}-{spec.stem}"
    staging.mkdir(exist_ok=True)
    tmp = staging / path.name
    writer = gguf.GGUFWriter(str(tmp), spec.arch, split_max_tensors=spec.split_tensors)
    writer.add_name(spec.stem)
    writer.add_context_length(spec.ctx)
    writer.add_embedding_length(spec.embd)
    writer.add_block_count(spec.layers)
    writer.add_feed_forward_length(spec.ff)
    writer.add_head_count(spec.heads)
    if spec.arch == "granitehybrid":  # 0 marks a recurrent layer
        writer.add_head_count_kv([spec.kv_heads if i in spec.attention_layers else 0
                                  for i in range(spec.layers)])
    else:
        writer.add_head_count_kv(spec.kv_heads)
    if spec.heads:
        head = spec.embd // spec.heads  # Qwen3-Next rotates a quarter of each head
        writer.add_rope_dimension_count(MLA_ROPE if spec.arch == "deepseek2" else
                                        head // 4 if spec.arch == "qwen3next" else head)
    if spec.arch in MAMBA2_ARCHS:  # convert_hf_to_gguf.py's Mamba2Model keys
        writer.add_ssm_conv_kernel(SSM_CONV)
        writer.add_ssm_inner_size(2 * spec.embd)
        writer.add_ssm_state_size(spec.ssm_state)
        writer.add_ssm_time_step_rank(2 * spec.embd // SSM_HEAD)  # the SSM heads
        writer.add_ssm_group_count(spec.ssm_groups)
    if spec.arch == "qwen3next":  # conversion/qwen.py's Qwen3NextModel keys
        writer.add_ssm_conv_kernel(SSM_CONV)
        writer.add_ssm_state_size(spec.ssm_state)
        writer.add_ssm_group_count(spec.ssm_groups)
        writer.add_ssm_time_step_rank(spec.ssm_v_heads)
        writer.add_ssm_inner_size(spec.ssm_state * spec.ssm_v_heads)
        writer.add_full_attention_interval(spec.full_attention_interval)
        writer.add_expert_feed_forward_length(spec.ff)
    if spec.shared_ff:
        writer.add_expert_shared_feed_forward_length(spec.shared_ff)
    writer.add_layer_norm_rms_eps(1e-5)
    if spec.sliding_window:
        writer.add_sliding_window(spec.sliding_window)
    if spec.arch == "deepseek2":
        writer.add_q_lora_rank(MLA_Q_RANK)
        writer.add_kv_lora_rank(MLA_KV_RANK)
        writer.add_key_length(MLA_KV_RANK + MLA_ROPE)  # what the cache holds per token
        writer.add_value_length(MLA_KV_RANK)
        writer.add_key_length_mla(MLA_NOPE + MLA_ROPE)  # per head, after decompression
        writer.add_value_length_mla(MLA_V)
        writer.add_leading_dense_block_count(1)
        writer.add_expert_feed_forward_length(spec.ff // 4)
        writer.add_expert_shared_count(1)
        writer.add_expert_weights_scale(1.0)
        writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SOFTMAX)
    if spec.arch == "gpt-oss":
        writer.add_expert_feed_forward_length(spec.ff)
    if spec.experts:
        writer.add_expert_count(spec.experts)
        writer.add_expert_used_count(spec.experts_used)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if spec.quant == "q8_0"
                         else gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = 0
    for key, fld in vocab.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = fld.contents()
        vtype = fld.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(value)
            writer.add_key_value(key, value, vtype, sub_type=fld.types[-1])
        else:
            writer.add_key_value(key, value, vtype)
    writer.add_vocab_size(n_vocab)
    rng = np.random.default_rng(spec.seed)

    def weight(*shape: int) -> np.ndarray:
        if spec.sparse:  # a view of one zero: no memory, nothing written
            return np.broadcast_to(np.float16(0), shape)
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    head_dim = spec.embd // max(spec.heads, 1)
    kv = spec.kv_heads * head_dim
    add = writer.add_tensor

    data_bytes: list[int] = []

    def add_weight(name: str, value: np.ndarray) -> None:
        if spec.sparse:
            data_bytes.append(_add_info(writer, gguf, name, value, spec.quant))
            return
        if not spec.quant or value.ndim != 2 or name.startswith("token_embd"):
            add(name, value)
            return
        qtype = gguf.GGMLQuantizationType[spec.quant.upper()]
        data = gguf.quants.quantize(value.astype(np.float32), qtype)
        add(name, data, raw_dtype=qtype)

    # every weight below goes through add_weight (quantized when asked), the helpers too
    writer.add_tensor = add_weight  # type: ignore[method-assign,assignment]  # narrower, same calls
    writer.add_tensor("token_embd.weight", weight(n_vocab, spec.embd))
    for i in range(spec.layers if spec.arch not in ("deepseek2", "qwen3next", *MAMBA2_ARCHS)
                   else 0):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm(spec.embd))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(spec.embd, spec.embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv, spec.embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv, spec.embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(spec.embd, spec.embd))
        if spec.arch != "gpt-oss":
            writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm(spec.embd))
        if spec.arch == "gemma3":  # src/models/gemma3.cpp
            writer.add_tensor(f"blk.{i}.attn_q_norm.weight", norm(head_dim))
            writer.add_tensor(f"blk.{i}.attn_k_norm.weight", norm(head_dim))
        if spec.arch in ("gemma2", "gemma3"):
            writer.add_tensor(f"blk.{i}.post_attention_norm.weight", norm(spec.embd))
            writer.add_tensor(f"blk.{i}.post_ffw_norm.weight", norm(spec.embd))
        if spec.arch == "gpt-oss":  # src/models/openai-moe.cpp (b6110: biases required)
            writer.add_tensor(f"blk.{i}.post_attention_norm.weight", norm(spec.embd))
            writer.add_tensor(f"blk.{i}.attn_sinks.weight", norm(spec.heads))
            for name, n in (("attn_q", spec.embd), ("attn_k", kv), ("attn_v", kv),
                            ("attn_output", spec.embd)):
                writer.add_tensor(f"blk.{i}.{name}.bias", np.zeros(n, dtype=np.float32))
            e = spec.experts
            writer.add_tensor(f"blk.{i}.ffn_gate_inp.bias", np.zeros(e, dtype=np.float32))
            for name, n in (("gate", spec.ff), ("up", spec.ff), ("down", spec.embd)):
                writer.add_tensor(f"blk.{i}.ffn_{name}_exps.bias",
                                  np.zeros((e, n), dtype=np.float32))
        if spec.experts:
            _routed_experts(spec, writer, f"blk.{i}.", weight, rng)
        else:
            writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(spec.ff, spec.embd))
            writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(spec.ff, spec.embd))
            writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(spec.embd, spec.ff))
    if spec.arch == "deepseek2":
        _deepseek2_layers(spec, writer, weight, norm, rng)
    if spec.arch in MAMBA2_ARCHS:
        _mamba2_layers(spec, writer, weight, norm, rng)
    if spec.arch == "qwen3next":
        _qwen3next_layers(spec, writer, weight, norm, rng)
    writer.add_tensor("output_norm.weight", norm(spec.embd))
    if not spec.tied_embeddings:
        writer.add_tensor("output.weight", weight(n_vocab, spec.embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if spec.sparse:
        writer.write_ti_data_to_file()
        writer.close()
        start = -(-tmp.stat().st_size // ALIGN) * ALIGN
        os.truncate(tmp, start + sum(-(-n // ALIGN) * ALIGN for n in data_bytes))
    else:
        writer.write_tensors_to_file()
        writer.close()
    written = sorted(staging.iterdir())
    for f in reversed(written):  # every shard (or the one file) into place, the first shard last
        f.rename(path.parent / f.name)
    staging.rmdir()
    return path.parent / written[0].name


ALIGN = 32  #: GGUF's default alignment of tensor data


def _add_info(writer: Any, gguf: Any, name: str, value: np.ndarray, quant: str) -> int:
    """A tensor's entry in the header only (a sparse model); its data's bytes. Weight
    matrices and expert stacks take the model's type, token_embd and vectors stay."""
    if quant and value.ndim >= 2 and not name.startswith("token_embd"):
        qtype = gguf.GGMLQuantizationType[quant.upper()]
        shape = gguf.quants.quant_shape_to_byte_shape(value.shape, qtype)
        nbytes = int(np.prod(shape))
        writer.add_tensor_info(name, shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        return nbytes
    writer.add_tensor_info(name, value.shape, value.dtype, value.nbytes)
    return int(value.nbytes)


MLA_Q_RANK, MLA_KV_RANK, MLA_ROPE, MLA_NOPE, MLA_V = 64, 64, 16, 32, 32


def _deepseek2_layers(spec: TinySpec, writer: Any, weight: Callable[..., np.ndarray],
                      norm: Callable[[int], np.ndarray], rng: np.random.Generator) -> None:
    """DeepSeek V3-style blocks (src/models/deepseek2.cpp): low-rank Q, the latent KV with
    split K/V decompression (attn_k_b, attn_v_b), a dense first layer, then experts."""
    e, h, ff_exp = spec.embd, spec.heads, spec.ff // 4
    for i in range(spec.layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(e))
        writer.add_tensor(p + "attn_q_a_norm.weight", norm(MLA_Q_RANK))
        writer.add_tensor(p + "attn_kv_a_norm.weight", norm(MLA_KV_RANK))
        writer.add_tensor(p + "attn_q_a.weight", weight(MLA_Q_RANK, e))
        writer.add_tensor(p + "attn_q_b.weight", weight(h * (MLA_NOPE + MLA_ROPE), MLA_Q_RANK))
        writer.add_tensor(p + "attn_kv_a_mqa.weight", weight(MLA_KV_RANK + MLA_ROPE, e))
        writer.add_tensor(p + "attn_k_b.weight", weight(h, MLA_KV_RANK, MLA_NOPE))
        writer.add_tensor(p + "attn_v_b.weight", weight(h, MLA_V, MLA_KV_RANK))
        writer.add_tensor(p + "attn_output.weight", weight(e, h * MLA_V))
        writer.add_tensor(p + "ffn_norm.weight", norm(e))
        if i == 0:
            writer.add_tensor(p + "ffn_gate.weight", weight(spec.ff, e))
            writer.add_tensor(p + "ffn_down.weight", weight(e, spec.ff))
            writer.add_tensor(p + "ffn_up.weight", weight(spec.ff, e))
            continue
        n = spec.experts
        writer.add_tensor(p + "ffn_gate_inp.weight",
                          rng.standard_normal((n, e), dtype=np.float32) * 0.02)
        writer.add_tensor(p + "ffn_gate_exps.weight", weight(n, ff_exp, e))
        writer.add_tensor(p + "ffn_up_exps.weight", weight(n, ff_exp, e))
        writer.add_tensor(p + "ffn_down_exps.weight", weight(n, e, ff_exp))
        writer.add_tensor(p + "ffn_gate_shexp.weight", weight(ff_exp, e))
        writer.add_tensor(p + "ffn_down_shexp.weight", weight(e, ff_exp))
        writer.add_tensor(p + "ffn_up_shexp.weight", weight(ff_exp, e))


SSM_CONV, SSM_HEAD = 4, 64  #: the conv kernel and the SSM heads' width (Mamba-2's defaults)


def _mamba2_layers(spec: TinySpec, writer: Any, weight: Callable[..., np.ndarray],
                   norm: Callable[[int], np.ndarray], rng: np.random.Generator) -> None:
    """Mamba-2 mixers (src/models/mamba2.cpp, granite-hybrid.cpp): in_proj to z, x, B, C and
    dt; a short causal convolution; the selective scan; a grouped RMS norm; out_proj. In a
    granitehybrid model, the layers in ``attention_layers`` are attention instead, and every
    layer has a feed-forward block (routed experts and a shared one, or dense)."""
    e, inner, d_state, groups = spec.embd, 2 * spec.embd, spec.ssm_state, spec.ssm_groups
    heads = inner // SSM_HEAD
    conv = inner + 2 * groups * d_state
    head_dim = spec.embd // max(spec.heads, 1)
    for i in range(spec.layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(e))
        if i in spec.attention_layers:
            writer.add_tensor(p + "attn_q.weight", weight(e, e))
            writer.add_tensor(p + "attn_k.weight", weight(spec.kv_heads * head_dim, e))
            writer.add_tensor(p + "attn_v.weight", weight(spec.kv_heads * head_dim, e))
            writer.add_tensor(p + "attn_output.weight", weight(e, e))
        else:
            writer.add_tensor(p + "ssm_in.weight", weight(inner + conv + heads, e))
            # f32, as convert_hf_to_gguf.py keeps it: ggml's ssm_conv takes no other type
            writer.add_tensor(p + "ssm_conv1d.weight", weight(conv, SSM_CONV).astype(np.float32))
            writer.add_tensor(p + "ssm_conv1d.bias", np.zeros(conv, dtype=np.float32))
            writer.add_tensor(p + "ssm_dt.bias", np.zeros(heads, dtype=np.float32))
            writer.add_tensor(p + "ssm_a", -np.ones((heads, 1), dtype=np.float32))
            writer.add_tensor(p + "ssm_d", np.ones((heads, 1), dtype=np.float32))
            writer.add_tensor(p + "ssm_norm.weight", np.ones((groups, inner // groups),
                                                             dtype=np.float32))
            writer.add_tensor(p + "ssm_out.weight", weight(e, inner))
        if spec.arch != "granitehybrid":
            continue
        writer.add_tensor(p + "ffn_norm.weight", norm(e))
        if spec.experts:
            _routed_experts(spec, writer, p, weight, rng)
        else:
            writer.add_tensor(p + "ffn_gate.weight", weight(spec.ff, e))
            writer.add_tensor(p + "ffn_up.weight", weight(spec.ff, e))
            writer.add_tensor(p + "ffn_down.weight", weight(e, spec.ff))
        if spec.shared_ff:
            _shared_expert(spec, writer, p, weight)


def _qwen3next_layers(spec: TinySpec, writer: Any, weight: Callable[..., np.ndarray],
                      norm: Callable[[int], np.ndarray], rng: np.random.Generator) -> None:
    """Qwen3-Next blocks (src/models/qwen3next.cpp load_arch_tensors), as convert writes them:
    gated delta net layers (attn_qkv and attn_gate, the short convolution, beta/alpha, a gated
    norm per value head) and, every full_attention_interval-th layer, attention whose query
    projection carries a gate too (2 n_embd rows), with Q and K norms; every layer a
    post-attention norm, routed experts and a shared expert behind a sigmoid gate."""
    e, hd = spec.embd, spec.embd // spec.heads
    d, k_heads, v_heads = spec.ssm_state, spec.ssm_groups, spec.ssm_v_heads
    key_dim, value_dim = d * k_heads, d * v_heads
    conv = 2 * key_dim + value_dim
    for i in range(spec.layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(e))
        writer.add_tensor(p + "post_attention_norm.weight", norm(e))
        if (i + 1) % spec.full_attention_interval == 0:
            writer.add_tensor(p + "attn_q.weight", weight(2 * hd * spec.heads, e))
            writer.add_tensor(p + "attn_k.weight", weight(spec.kv_heads * hd, e))
            writer.add_tensor(p + "attn_v.weight", weight(spec.kv_heads * hd, e))
            writer.add_tensor(p + "attn_output.weight", weight(e, hd * spec.heads))
            writer.add_tensor(p + "attn_q_norm.weight", norm(hd))
            writer.add_tensor(p + "attn_k_norm.weight", norm(hd))
        else:
            writer.add_tensor(p + "attn_qkv.weight", weight(conv, e))
            writer.add_tensor(p + "attn_gate.weight", weight(value_dim, e))
            writer.add_tensor(p + "ssm_conv1d.weight", weight(conv, SSM_CONV).astype(np.float32))
            writer.add_tensor(p + "ssm_dt.bias", np.zeros(v_heads, dtype=np.float32))
            writer.add_tensor(p + "ssm_a", -np.ones(v_heads, dtype=np.float32))
            writer.add_tensor(p + "ssm_ba.weight", weight(2 * v_heads, e))
            writer.add_tensor(p + "ssm_norm.weight", norm(d))
            writer.add_tensor(p + "ssm_out.weight", weight(e, value_dim))
        _routed_experts(spec, writer, p, weight, rng)
        writer.add_tensor(p + "ffn_gate_inp_shexp.weight",
                          rng.standard_normal(e, dtype=np.float32) * 0.02)
        _shared_expert(spec, writer, p, weight)


def _routed_experts(spec: TinySpec, writer: Any, p: str, weight: Callable[..., np.ndarray],
                    rng: np.random.Generator) -> None:
    """A block's router and its experts' gate, up and down stacks (llama's MoE names)."""
    n, e = spec.experts, spec.embd
    writer.add_tensor(p + "ffn_gate_inp.weight",
                      rng.standard_normal((n, e), dtype=np.float32) * 0.02)
    writer.add_tensor(p + "ffn_gate_exps.weight", weight(n, spec.ff, e))
    writer.add_tensor(p + "ffn_up_exps.weight", weight(n, spec.ff, e))
    writer.add_tensor(p + "ffn_down_exps.weight", weight(n, e, spec.ff))


def _shared_expert(spec: TinySpec, writer: Any, p: str,
                   weight: Callable[..., np.ndarray]) -> None:
    """The expert every token goes through beside the routed ones (spec.shared_ff wide)."""
    writer.add_tensor(p + "ffn_gate_shexp.weight", weight(spec.shared_ff, spec.embd))
    writer.add_tensor(p + "ffn_up_shexp.weight", weight(spec.shared_ff, spec.embd))
    writer.add_tensor(p + "ffn_down_shexp.weight", weight(spec.embd, spec.shared_ff))
