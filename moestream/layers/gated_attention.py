"""Attention with an output gate (the full-attention layers of Qwen3.5-MoE and Qwen3-Next): attn_q projects each
head to its query and a gate of the same width, side by side ([H, 2 Dh]); the attention's output is multiplied
by sigmoid(gate) before attn_output. Otherwise layers/attention.py's GQA with per-head Q/K RMSNorm and RoPE over
the first rope dims (NeoX halves)."""

from __future__ import annotations

import torch

from .attention import Attention, Segment


class GatedAttention(Attention):
    def __call__(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        # x: [T, D] -> [T, D]
        T, H, dh, w = x.shape[0], self.n_heads, self.head_dim, self.w
        q, gate = w.q(x).view(T, H, 2 * dh).split([dh, dh], dim=-1)  # [T, H, Dh] each
        k = w.k(x).view(T, self.n_kv_heads, dh)
        v = w.v(x).view(T, self.n_kv_heads, dh)
        q, k = w.q_norm(q), w.k_norm(k)
        out = torch.cat([self._attend(q, k, v, s) for s in segments], dim=0)  # [T, H, Dh]
        return w.o((out * torch.sigmoid(gate)).reshape(T, H * dh))
