"""Attention with sinks and an optional sliding window (gpt-oss; GGUF `gpt-oss`).

- Sinks: every head h has a learned logit s_h (attn_sinks [H]) that joins the softmax's denominator as one more
  "key" with no value: p(t, j) = exp(score(t, j)) / (exp(s_h) + sum_j' exp(score(t, j'))). A head can so attend
  to nothing, which keeps the first tokens from becoming attention sinks themselves.
- Sliding window (every other layer of gpt-oss): a query at position p sees the keys at positions p - W + 1 .. p
  (W = attention.sliding_window, itself included), as transformers and llama.cpp mask it. The cache still holds
  every key (keys are stored at their positions); only the window's are read.

Otherwise the plain GQA attention of layers/attention.py (projections with biases, RoPE, a per-sequence cache)."""

from __future__ import annotations

import torch

from .attention import Attention, AttentionWeights, Segment
from .rope import Rope


class SinkAttention(Attention):
    def __init__(self, layer: int, w: AttentionWeights, n_heads: int, n_kv_heads: int, head_dim: int, rope: Rope,
                 sinks: torch.Tensor, window: int | None):
        super().__init__(layer, w, n_heads, n_kv_heads, head_dim, rope)
        self.sinks = sinks.reshape(n_heads).float()  # [H] logits
        self.window = window  # keys a query sees (itself included); None: the whole context

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segment) -> torch.Tensor:
        # -> [t, H, Dh]
        rows = slice(seg.start, seg.start + seg.length)
        q_s = self.rope(q[rows], seg.positions)  # [t, H, Dh]
        k_all, v_all = seg.kv.append(self.layer, self.rope(k[rows], seg.positions), v[rows])  # [KVH, S, Dh]
        first = 0 if self.window is None else max(0, int(seg.positions.min()) - self.window + 1)
        k_all, v_all = k_all[:, first:], v_all[:, first:]  # keys before `first` are outside every query's window
        t, kvh, dh = seg.length, self.n_kv_heads, self.head_dim
        g = self.n_heads // kvh
        qg = q_s.view(t, kvh, g, dh).permute(1, 2, 0, 3)  # [KVH, G, t, Dh]
        scores = torch.matmul(qg, k_all[:, None].transpose(2, 3)) * dh**-0.5  # [KVH, G, t, S']
        scores = scores.masked_fill(~self._visible(seg.positions, first, k_all.shape[1]), float("-inf"))
        sinks = self.sinks.view(kvh, g, 1, 1).expand(kvh, g, t, 1)
        probs = torch.softmax(torch.cat([scores, sinks], dim=-1), dim=-1)[..., :-1]  # the sink's share is dropped
        out = torch.matmul(probs, v_all[:, None])  # [KVH, G, t, Dh]
        return out.permute(2, 0, 1, 3).reshape(t, self.n_heads, dh)

    def _visible(self, positions: torch.Tensor, first: int, n_keys: int) -> torch.Tensor:
        # [t, n_keys]: query i (at positions[i]) may see key j (stored at position first + j)
        key_pos = first + torch.arange(n_keys)[None, :]
        visible = key_pos <= positions[:, None]
        if self.window is not None:
            visible &= key_pos > positions[:, None] - self.window
        return visible
