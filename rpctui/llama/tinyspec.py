"""The shape of a generated model (rpctui.llama.tinymodel writes it, tinylayers its blocks)."""

from __future__ import annotations

from dataclasses import dataclass

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
