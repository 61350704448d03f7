"""Causal self-attention with GQA, optional Q/K/V bias, optional Q/K RMSNorm, RoPE and a per-sequence KV cache.

Tokens of several sequences arrive concatenated ([T, D]); `segments` says which rows belong to which sequence so
that everything but the attention itself runs on the whole batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .linear import QuantLinear
from .norm import RMSNorm
from .rope import Rope


class LayerKV(Protocol):
    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([T, KVH, Dh]) after the cached ones; return all keys and values so far ([KVH, S, Dh])."""


@dataclass(frozen=True)
class Segment:
    """Rows [start, start+length) of the batch belong to one sequence whose cache is `kv`."""

    start: int
    length: int
    positions: torch.Tensor  # [length] int64, absolute positions
    kv: LayerKV


@dataclass
class AttentionWeights:
    q: QuantLinear
    k: QuantLinear
    v: QuantLinear
    o: QuantLinear
    q_norm: RMSNorm | None = None
    k_norm: RMSNorm | None = None
    qk_norm_per_head: bool = True  # Qwen3: per head (size Dh); OLMoE: over the whole projection


class Attention:
    def __init__(self, layer: int, w: AttentionWeights, n_heads: int, n_kv_heads: int, head_dim: int, rope: Rope):
        self.layer, self.w, self.rope = layer, w, rope
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim

    def __call__(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        # x: [T, D] -> [T, D]
        q, k, v = self._project(x)
        outs = [self._attend(q, k, v, s) for s in segments]
        return self.w.o(torch.cat(outs, dim=0).flatten(1))

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.w.q(x), self.w.k(x), self.w.v(x)
        if self.w.q_norm is not None and not self.w.qk_norm_per_head:
            q, k = self.w.q_norm(q), self.w.k_norm(k)
        q = q.view(x.shape[0], self.n_heads, self.head_dim)
        k = k.view(x.shape[0], self.n_kv_heads, self.head_dim)
        v = v.view(x.shape[0], self.n_kv_heads, self.head_dim)
        if self.w.q_norm is not None and self.w.qk_norm_per_head:
            q, k = self.w.q_norm(q), self.w.k_norm(k)
        return q, k, v

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segment) -> torch.Tensor:
        rows = slice(seg.start, seg.start + seg.length)
        q_s = self.rope(q[rows], seg.positions)  # [t, H, Dh]
        k_all, v_all = seg.kv.append(self.layer, self.rope(k[rows], seg.positions), v[rows])  # [KVH, S, Dh]
        if seg.length == 1:
            return self._attend_one(q_s, k_all, v_all)
        mask = _causal_mask(seg.positions, k_all.shape[1])
        out = F.scaled_dot_product_attention(
            q_s.transpose(0, 1), k_all, v_all, attn_mask=mask, enable_gqa=self.n_heads != self.n_kv_heads,
        )
        return out.transpose(0, 1)  # [t, H, Dh]


    def _attend_one(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Decode step: one query sees every cached key. GQA as [KVH, group, Dh] x [KVH, Dh, S] so that no
        repeated K/V and no mask are materialised (SDPA with enable_gqa + mask: 7.6 ms vs <1 ms at S=512)."""
        kvh, dh = self.n_kv_heads, self.head_dim
        qg = q[0].view(kvh, self.n_heads // kvh, dh)  # [KVH, G, Dh]
        scores = torch.matmul(qg, k.transpose(1, 2)) * dh**-0.5  # [KVH, G, S]
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [KVH, G, Dh]
        return out.reshape(1, self.n_heads, dh)


def _causal_mask(positions: torch.Tensor, n_keys: int) -> torch.Tensor:
    # mask[i, j]: query at positions[i] may see key j (keys are stored at positions 0..n_keys-1)
    return torch.arange(n_keys)[None, :] <= positions[:, None]
