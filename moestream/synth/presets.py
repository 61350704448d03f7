"""Real MoE architectures, shapes only: what `moestream synth` writes random weights for.

Each preset mirrors the GGUF that llama.cpp's `convert_hf_to_gguf.py` writes for the real checkpoint (same
architecture name, metadata keys and tensor shapes), so moestream and llama.cpp load the synthetic file exactly
like the real one; only the weights are random."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Routing:
    """DeepSeek-V3 / GLM-4.5 routing and layer plan (defaults: Mixtral's plain softmax MoE in every layer)."""

    n_dense_leading: int = 0  # leading dense layers (feed_forward_length wide)
    n_shared: int = 0  # ungated shared experts, each ff_expert wide
    gating: str = "softmax"  # or "sigmoid"
    selection_bias: bool = False  # exp_probs_b
    weights_scale: float = 1.0
    weights_norm: bool = False
    n_groups: int = 1
    groups_used: int = 1


@dataclass(frozen=True)
class Latent:
    """Multi-head latent attention's widths (DeepSeek-V3)."""

    q_lora_rank: int
    kv_lora_rank: int
    nope_dim: int
    rope_dim: int
    v_dim: int


@dataclass(frozen=True)
class Yarn:
    factor: float
    original_context: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    log_multiplier: float = 0.0


@dataclass(frozen=True)
class Oss:
    """gpt-oss's additions: attention sinks, an output-projection bias, router and per-expert biases, and a sliding
    window (the converter writes no layer pattern; llama.cpp and moestream slide on even layers)."""

    sliding_window: int


@dataclass(frozen=True)
class Preset:
    name: str  # CLI name
    title: str  # general.name prefix
    arch: str  # GGUF general.architecture
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_experts: int
    n_experts_used: int
    ff_expert: int  # width of one routed expert
    ff_dense: int  # {arch}.feed_forward_length as the converter writes it
    vocab: int
    context: int
    rope_base: float
    rms_eps: float
    qk_norm: bool  # per-head RMSNorm on Q and K (attn_q_norm / attn_k_norm, size head_dim)
    tokenizer: str  # "spm" (SentencePiece, llama.cpp model "llama") or "bpe" (byte-level BPE, model "gpt2")
    tokenizer_pre: str | None = None  # BPE pre-tokenizer name
    routing: Routing = Routing()
    latent: Latent | None = None  # MLA instead of Q/K/V projections
    attn_bias: bool = False  # Q/K/V biases
    rope_dim: int | None = None  # rotated dims per head (None: head_dim)
    ffn_norm: str = "ffn_norm"  # the pre-FFN norm's tensor name (GLM's: post_attention_norm)
    yarn: Yarn | None = None
    oss: Oss | None = None
    expert_qtype: str | None = None  # the experts' own type whatever --qtype says ("mxfp4": gpt-oss ships them so)

    def with_layers(self, n_layers: int) -> "Preset":
        """The first n_layers layers (a cut-down file; its dense layers stay first, as many as fit)."""
        if n_layers < 1:
            raise ConfigError(f"--layers must be at least 1 (got {n_layers})")
        dense = min(self.routing.n_dense_leading, max(n_layers - 1, 0))  # keep at least one MoE layer
        return dataclasses.replace(self, n_layers=n_layers, routing=dataclasses.replace(self.routing,
                                                                                          n_dense_leading=dense))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # Mixtral-8x7B as llama.cpp converts it: architecture `llama` with merged `ffn_*_exps` experts.
        Preset(name="mixtral-8x7b", title="Mixtral-8x7B", arch="llama", n_layers=32, d_model=4096, n_heads=32,
               n_kv_heads=8, head_dim=128, n_experts=8, n_experts_used=2, ff_expert=14336, ff_dense=14336,
               vocab=32000, context=32768, rope_base=1e6, rms_eps=1e-5, qk_norm=False, tokenizer="spm"),
        # Qwen3-30B-A3B: head_dim 128 != d_model / n_heads (64), so key/value lengths are written explicitly.
        Preset(name="qwen3-30b-a3b", title="Qwen3-30B-A3B", arch="qwen3moe", n_layers=48, d_model=2048,
               n_heads=32, n_kv_heads=4, head_dim=128, n_experts=128, n_experts_used=8, ff_expert=768,
               ff_dense=6144, vocab=151936, context=40960, rope_base=1e6, rms_eps=1e-6, qk_norm=True,
               tokenizer="bpe", tokenizer_pre="qwen2"),
        # DeepSeek-V3 / R1 (671B): MLA, 3 dense layers then 58 MoE layers of 256 experts (top-8 from 4 of 8 groups,
        # sigmoid with a selection bias, x2.5) + 1 shared expert; YaRN x40 over 4096 positions
        Preset(name="deepseek-v3", title="DeepSeek-V3", arch="deepseek2", n_layers=61, d_model=7168, n_heads=128,
               n_kv_heads=1, head_dim=576, n_experts=256, n_experts_used=8, ff_expert=2048, ff_dense=18432,
               vocab=129280, context=163840, rope_base=10000.0, rms_eps=1e-6, qk_norm=False, tokenizer="bpe",
               tokenizer_pre="deepseek-v3",
               routing=Routing(n_dense_leading=3, n_shared=1, gating="sigmoid", selection_bias=True,
                               weights_scale=2.5, weights_norm=True, n_groups=8, groups_used=4),
               latent=Latent(q_lora_rank=1536, kv_lora_rank=512, nope_dim=128, rope_dim=64, v_dim=128),
               yarn=Yarn(factor=40.0, original_context=4096, beta_fast=32.0, beta_slow=1.0, log_multiplier=0.1)),
        # GLM-4.5-Air (106B): 1 dense layer then 45 MoE layers of 128 experts (top-8, sigmoid with a selection
        # bias) + 1 shared expert, Q/K/V biases, RoPE over half of each head
        Preset(name="glm-4.5-air", title="GLM-4.5-Air", arch="glm4moe", n_layers=46, d_model=4096, n_heads=96,
               n_kv_heads=8, head_dim=128, n_experts=128, n_experts_used=8, ff_expert=1408, ff_dense=10944,
               vocab=151552, context=131072, rope_base=1e6, rms_eps=1e-5, qk_norm=False, tokenizer="bpe",
               tokenizer_pre="glm4",
               routing=Routing(n_dense_leading=1, n_shared=1, gating="sigmoid", selection_bias=True,
                               weights_scale=1.0, weights_norm=True),
               attn_bias=True, rope_dim=64, ffn_norm="post_attention_norm"),
        # gpt-oss-120b / 20b: 36 / 24 layers of 128 / 32 MXFP4 experts (top-4), GQA with sinks and Q/K/V/O biases,
        # a 128-key sliding window on alternate layers, YaRN x32 over 4096 positions, the o200k vocabulary
        *(Preset(name=f"gpt-oss-{size}", title=f"gpt-oss-{size}", arch="gpt-oss", n_layers=layers, d_model=2880,
                 n_heads=64, n_kv_heads=8, head_dim=64, n_experts=experts, n_experts_used=4, ff_expert=2880,
                 ff_dense=2880, vocab=201088, context=131072, rope_base=150000.0, rms_eps=1e-5, qk_norm=False,
                 tokenizer="bpe", tokenizer_pre="gpt-4o", attn_bias=True, ffn_norm="post_attention_norm",
                 yarn=Yarn(factor=32.0, original_context=4096), oss=Oss(sliding_window=128), expert_qtype="mxfp4")
          for size, layers, experts in (("120b", 36, 128), ("20b", 24, 32))),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]
