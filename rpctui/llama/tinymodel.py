"""A tiny but real GGUF model: random F16 weights, a real tokenizer, loads in every build.

With a fixed seed the file is byte-identical each time, so it is generated, never
committed. Random weights give nonsense text and perfectly valid timings and
memory figures, which is all the demo and the tests need. The tokenizer is
copied from the vocab-only models that llama.cpp's source tree ships.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from rpctui.llama.tinylayers import (
    LAYERS,
    MLA_KV_RANK,
    MLA_NOPE,
    MLA_Q_RANK,
    MLA_ROPE,
    MLA_V,
    SSM_CONV,
    SSM_HEAD,
)
from rpctui.llama.tinyspec import MAMBA2_ARCHS, TinySpec
from rpctui.paths import cache_dir

VOCAB_FILE = "ggml-vocab-llama-spm.gguf"


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
    # the same with every weight matrix just over the threshold (attention 10.1 MiB, 444 MiB in
    # all): half the bytes to send, for the suite's cache tests
    "wide-small": TinySpec(layers=2, embd=2304, ff=3072, heads=24, kv_heads=24),
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
    LAYERS[spec.arch if spec.arch in LAYERS else "llama"](spec, writer, weight, norm, rng)
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
