"""Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2; GGUF `deepseek2`), computed in the absorbed form so that
the KV cache holds only what MLA compresses to: per token and layer, the normalised latent c [kv_lora_rank] and
one positional key k_pe [rope dims] shared by every head (576 floats for DeepSeek-V3, against 128 heads x 320 for
the keys and values it stands for).

Shapes (H heads, dn = qk_nope dims, dr = rope dims, r = kv_lora_rank, dv = value dims per head):
- query: q = q_b(q_a_norm(q_a(x))) (or attn_q(x) without a query low-rank), [T, H, dn + dr], split into q_nope, q_pe;
- attn_kv_a_mqa(x) = [c_raw | k_pe], [T, r + dr]; c = attn_kv_a_norm(c_raw); RoPE (adjacent pairs) on q_pe, k_pe;
- a head's key is K_h c + k_pe, its value V_h c, with K_h [dn, r] and V_h [dv, r] (attn_kv_b = [K_h; V_h] stacked per
  head in older files; attn_k_b holds K_h^T [r, dn] and attn_v_b V_h in newer ones). Absorbed: score(t, s) =
  (K_h^T q_nope_h) . c_s + q_pe_h . k_pe_s, scaled by 1/sqrt(dn + dr) (x mscale^2 under YaRN); the output is
  V_h (sum_s p(t, s) c_s), then attn_output over the heads' dv values. The same arithmetic as transformers'
  DeepseekV3Attention in another association order, so the two agree to float rounding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import Segment, _causal_mask
from .linear import PerHeadLinear, QuantLinear
from .norm import RMSNorm
from .rope import Rope


@dataclass
class MLAWeights:
    kv_a: QuantLinear  # attn_kv_a_mqa [r + dr, D]
    kv_a_norm: RMSNorm  # [r]
    k_b: PerHeadLinear  # per head K_h^T [r, dn]: x [t, H, dn] -> [t, H, r]
    v_b: PerHeadLinear  # per head V_h [dv, r]: x [t, H, r] -> [t, H, dv]
    o: QuantLinear  # attn_output [D, H dv]
    q: QuantLinear | None = None  # attn_q [H (dn + dr), D], when there is no query low-rank
    q_a: QuantLinear | None = None  # attn_q_a [q_lora_rank, D]
    q_a_norm: RMSNorm | None = None
    q_b: QuantLinear | None = None  # attn_q_b [H (dn + dr), q_lora_rank]


class MLAttention:
    def __init__(self, layer: int, w: MLAWeights, n_heads: int, nope_dim: int, rope_dim: int, v_dim: int,
                 rank: int, rope: Rope, scale: float):
        self.layer, self.w, self.rope, self.scale = layer, w, rope, scale
        self.n_heads, self.nope_dim, self.rope_dim, self.v_dim, self.rank = n_heads, nope_dim, rope_dim, v_dim, rank

    def __call__(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        # x: [T, D] -> [T, D]
        T, H = x.shape[0], self.n_heads
        q = self.w.q(x) if self.w.q is not None else self.w.q_b(self.w.q_a_norm(self.w.q_a(x)))
        q_nope, q_pe = q.view(T, H, self.nope_dim + self.rope_dim).split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_pe = self.w.kv_a(x).split([self.rank, self.rope_dim], dim=-1)  # [T, r], [T, dr]
        latent = self.w.kv_a_norm(latent)
        q_lat = self.w.k_b(q_nope)  # [T, H, r]
        outs = [self._attend(q_lat, q_pe, latent, k_pe, s) for s in segments]
        o_lat = torch.cat(outs, dim=0)  # [T, H, r]
        o = self.w.v_b(o_lat)  # [T, H, dv]
        return self.w.o(o.flatten(1))

    def _attend(self, q_lat: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                seg: Segment) -> torch.Tensor:
        # -> [t, H, r]: each query's attention-weighted sum of the cached latents
        rows = slice(seg.start, seg.start + seg.length)
        q_pe_s = self.rope(q_pe[rows], seg.positions)  # [t, H, dr]
        k_pe_s = self.rope(k_pe[rows, None, :], seg.positions)  # [t, 1, dr]
        lat_all, pe_all = seg.kv.append(self.layer, latent[rows, None, :], k_pe_s)  # [1, S, r], [1, S, dr]
        scores = (torch.einsum("thr,sr->hts", q_lat[rows], lat_all[0])
                  + torch.einsum("thd,sd->hts", q_pe_s, pe_all[0])) * self.scale  # [H, t, S]
        if seg.length > 1:
            scores = scores.masked_fill(~_causal_mask(seg.positions, lat_all.shape[1]), float("-inf"))
        return torch.einsum("hts,sr->thr", torch.softmax(scores, dim=-1), lat_all[0])
