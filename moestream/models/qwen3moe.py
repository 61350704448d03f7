"""Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B): GGUF architecture `qwen3moe`.

No Q/K/V bias; RMSNorm on each head of Q and K before RoPE (`attn_q_norm`/`attn_k_norm`, size head_dim); NEOX
RoPE; head_dim may differ from d_model / n_heads (`qwen3moe.attention.key_length`); top-k renormalised."""

from .decoder import ArchSpec

SPEC = ArchSpec(name="qwen3moe", rope="neox", norm_topk=True, qk_norm="head")
