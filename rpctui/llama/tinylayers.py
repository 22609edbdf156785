"""The blocks of the generated models, one writer per architecture family.

Each writes one model's layers through the writer tinymodel.write_model hands it (its
add_tensor quantizes or, for a sparse model, writes the header entry only), drawing weights
from the model's seeded generator in a fixed order: the same spec gives the same file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rpctui.llama.tinyspec import TinySpec


def _llama_layers(spec: TinySpec, writer: Any, weight: Callable[..., np.ndarray],
                  norm: Callable[[int], np.ndarray], rng: np.random.Generator) -> None:
    """Attention blocks in llama's names (src/models/llama.cpp), with what gemma2, gemma3 and
    gpt-oss add (their norms, attention sinks and biases), and dense or routed feed-forward."""
    head_dim = spec.embd // max(spec.heads, 1)
    kv = spec.kv_heads * head_dim
    for i in range(spec.layers):
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


Layers = Callable[[TinySpec, Any, Callable[..., np.ndarray], Callable[[int], np.ndarray],
                   np.random.Generator], None]

#: each architecture's blocks; any other arch (gemma2, gemma3, gpt-oss...) is llama's
LAYERS: dict[str, Layers] = {"llama": _llama_layers, "deepseek2": _deepseek2_layers,
                             "mamba2": _mamba2_layers, "granitehybrid": _mamba2_layers,
                             "qwen3next": _qwen3next_layers}
