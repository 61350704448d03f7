"""Real MoE architectures, shapes only: what `moestream synth` writes random weights for.

Each preset mirrors the GGUF that llama.cpp's `convert_hf_to_gguf.py` writes for the real checkpoint (same
architecture name, metadata keys and tensor shapes), so moestream and llama.cpp load the synthetic file exactly
like the real one; only the weights are random."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError


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

    def with_layers(self, n_layers: int) -> "Preset":
        if n_layers < 1:
            raise ConfigError(f"--layers must be at least 1 (got {n_layers})")
        return dataclasses.replace(self, n_layers=n_layers)


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
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]
