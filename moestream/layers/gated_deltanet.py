"""Gated DeltaNet (Yang et al. 2024), the linear-attention layers of Qwen3.5-MoE (GGUF `qwen35moe`; Qwen3-Next has
them too): no keys are cached; per sequence and layer a state of fixed size is carried from token to token.

Per token, with Hk key heads of width dk and Hv value heads of width dv (Hv a multiple of Hk):
- [q | k | v] = attn_qkv(x) [2 Hk dk + Hv dv] goes through a causal depthwise convolution of width K
  (ssm_conv1d [C, K], over this token and the K-1 before it) and SiLU; q and k are L2-normalised per head and q is
  scaled by dk^-0.5; value head j reads key head j mod Hk where the file stores value heads tiled (the converter's
  order for Qwen3.5), j div (Hv / Hk) where grouped by key head (its order for Qwen3-Next);
- beta = sigmoid(ssm_beta(x)) [Hv]; decay g = ssm_a * softplus(ssm_alpha(x) + ssm_dt.bias) [Hv] (ssm_a = -exp(A_log)
  as the converter writes it, so g < 0);
- the state S_h [dk, dv] per value head: S <- S exp(g); S <- S + k (beta (v - k^T S))^T (the delta rule); the output
  o_h = q^T S [dv];
- o = RMSNorm(o_h) * silu(attn_gate(x)_h) per head (ssm_norm [dv]), then ssm_out [D, Hv dv].

The state (the convolution's last K-1 inputs [K-1, C] and S [Hv, dk, dv]) lives in the sequence's cache
(engine/kv_cache.py set_state). This is transformers' recurrent form (torch_recurrent_gated_delta_rule), token by
token, for prefill as well: its chunked prefill computes the same sums in another order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import Segment
from .linear import QuantLinear
from .norm import RMSNorm


@dataclass
class DeltaNetWeights:
    qkv: QuantLinear  # attn_qkv [2 Hk dk + Hv dv, D]
    gate: QuantLinear  # attn_gate [Hv dv, D] (z)
    beta: QuantLinear  # ssm_beta [Hv, D]
    alpha: QuantLinear  # ssm_alpha [Hv, D]
    conv: torch.Tensor  # ssm_conv1d [C, K] float32
    dt_bias: torch.Tensor  # ssm_dt.bias [Hv]
    a: torch.Tensor  # ssm_a [Hv], negative
    norm: RMSNorm  # ssm_norm [dv]
    out: QuantLinear  # ssm_out [D, Hv dv]


class GatedDeltaNet:
    def __init__(self, layer: int, w: DeltaNetWeights, k_heads: int, v_heads: int, k_dim: int, v_dim: int,
                 tiled: bool = True):
        self.layer, self.w = layer, w
        self.k_heads, self.v_heads, self.k_dim, self.v_dim = k_heads, v_heads, k_dim, v_dim
        self.tiled = tiled  # value heads' order: tiled over the key heads, or grouped by key head

    def __call__(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        # x: [T, D] -> [T, D]
        T, w = x.shape[0], self.w
        qkv = w.qkv(x)  # [T, C]
        beta = torch.sigmoid(w.beta(x))  # [T, Hv]
        decay = torch.exp(w.a * F.softplus(w.alpha(x) + w.dt_bias))  # [T, Hv], in (0, 1)
        o = torch.cat([self._segment(qkv, beta, decay, s) for s in segments])  # [T, Hv, dv]
        z = w.gate(x).view(T, self.v_heads, self.v_dim)
        return w.out((w.norm(o) * F.silu(z)).reshape(T, -1))

    def _segment(self, qkv: torch.Tensor, beta: torch.Tensor, decay: torch.Tensor, seg: Segment) -> torch.Tensor:
        # -> [t, Hv, dv]; updates the sequence's state
        rows = slice(seg.start, seg.start + seg.length)
        state = seg.kv.state(self.layer)
        window, S = state if state is not None else self._empty_state(qkv.shape[1])
        mixed, window = self._conv(qkv[rows], window)  # [t, C]
        q, k, v = self._heads(mixed)
        out = torch.empty(seg.length, self.v_heads, self.v_dim)
        b, d = beta[rows], decay[rows]
        for i in range(seg.length):
            S = S * d[i, :, None, None]
            delta = (v[i] - torch.einsum("hk,hkv->hv", k[i], S)) * b[i, :, None]  # [Hv, dv]
            S = S + k[i, :, :, None] * delta[:, None, :]
            out[i] = torch.einsum("hk,hkv->hv", q[i], S)
        seg.kv.set_state(self.layer, (window, S), seg.length)
        return out

    def _empty_state(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        kernel = self.w.conv.shape[1]
        return torch.zeros(kernel - 1, channels), torch.zeros(self.v_heads, self.k_dim, self.v_dim)

    def _conv(self, x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal depthwise convolution: x [t, C] after the K-1 inputs before it (window) -> silu(conv) [t, C] and the
        new window."""
        kernel, t = self.w.conv.shape[1], x.shape[0]
        full = torch.cat([window, x])  # [K-1+t, C]
        out = sum(full[j:j + t] * self.w.conv[:, j] for j in range(kernel))
        return F.silu(out), full[full.shape[0] - (kernel - 1):]

    def _heads(self, mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[t, C] -> q, k [t, Hv, dk] (normalised, key heads tiled over the value heads), v [t, Hv, dv]."""
        t, hk, dk = mixed.shape[0], self.k_heads, self.k_dim
        q, k, v = mixed.split([hk * dk, hk * dk, self.v_heads * self.v_dim], dim=-1)
        q, k = _l2norm(q.reshape(t, hk, dk)) * dk**-0.5, _l2norm(k.reshape(t, hk, dk))
        per = self.v_heads // hk
        spread = (lambda x: x.repeat(1, per, 1)) if self.tiled else (lambda x: x.repeat_interleave(per, dim=1))
        return spread(q), spread(k), v.reshape(t, self.v_heads, self.v_dim)


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)
