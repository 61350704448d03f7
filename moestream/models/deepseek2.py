"""DeepSeek-V2/V3/R1, Kimi-K2 (GGUF architecture `deepseek2`): multi-head latent attention (layers/mla.py) with
RoPE on adjacent pairs of each head's last `rope.dimension_count` dims; the MoE side is the file's metadata, read
by the shared decoder: leading dense layers, sigmoid (V3) or softmax (V2) scores, the selection bias
`exp_probs_b`, group-limited routing, renormalised and scaled weights, an ungated shared expert.

Both layouts of the attention's up-projection are read: attn_k_b [H, r, dn] + attn_v_b [H, dv, r] (what the
converter writes today, for the absorbed form) and the older single attn_kv_b [H (dn + dv), r]."""

from __future__ import annotations

from typing import Iterator

import torch

from ..formats.weight import QuantWeight
from ..layers.linear import PerHeadLinear
from ..layers.mla import MLAttention, MLAWeights
from ..layers.rope import Rope, yarn_mscale
from .args import ModelArgs
from .decoder import ArchSpec, Weights


def build_attention(w: Weights, p: str, layer: int, a: ModelArgs, rope: Rope) -> MLAttention:
    k_b, v_b = _up_projections(w, p, a)
    mla = MLAWeights(kv_a=w.linear(p + "attn_kv_a_mqa.weight"), kv_a_norm=w.norm(p + "attn_kv_a_norm.weight", a.rms_eps),
                     k_b=k_b, v_b=v_b, o=w.linear(p + "attn_output.weight"))
    if a.q_lora_rank:
        mla.q_a, mla.q_b = w.linear(p + "attn_q_a.weight"), w.linear(p + "attn_q_b.weight")
        mla.q_a_norm = w.norm(p + "attn_q_a_norm.weight", a.rms_eps)
    else:
        mla.q = w.linear(p + "attn_q.weight")
    scale = (a.nope_dim + a.rope_dim) ** -0.5
    s = a.rope_scaling
    if s.kind == "yarn" and s.log_multiplier:  # transformers: softmax_scale * yarn_get_mscale(factor, mscale_all_dim)^2
        scale *= yarn_mscale(s.factor, s.log_multiplier / 0.1) ** 2
    return MLAttention(layer, mla, a.n_heads, a.nope_dim, a.rope_dim, a.v_head_dim, a.kv_lora_rank, rope, scale)


def _up_projections(w: Weights, p: str, a: ModelArgs) -> tuple[PerHeadLinear, PerHeadLinear]:
    """Per head: K_h^T [r, dn] and V_h [dv, r], each set stacked as one [H rows, cols] weight."""
    compute, H = w.compute, a.n_heads
    if p + "attn_k_b.weight" in w:
        k_b, v_b = w[p + "attn_k_b.weight"], w[p + "attn_v_b.weight"]  # [H, r, dn], [H, dv, r]
        return (PerHeadLinear(compute.prepare(_stacked(k_b)), H, compute),
                PerHeadLinear(compute.prepare(_stacked(v_b)), H, compute))
    kv_b = w[p + "attn_kv_b.weight"]  # [H (dn + dv), r]: per head K_h [dn, r] then V_h [dv, r]
    raw = kv_b.gguf_bytes().view(H, a.nope_dim + a.v_head_dim, -1)  # [H, dn + dv, row bytes]
    k = QuantWeight(raw[:, :a.nope_dim].reshape(H * a.nope_dim, -1), kv_b.qtype, (H * a.nope_dim, a.kv_lora_rank))
    k_t = k.dense().view(H, a.nope_dim, a.kv_lora_rank).transpose(1, 2)  # a quantized K_h cannot be transposed
    values = raw[:, a.nope_dim:].reshape(H * a.v_head_dim, -1).contiguous()
    v = QuantWeight(values, kv_b.qtype, (H * a.v_head_dim, a.kv_lora_rank))
    return (PerHeadLinear(_f32(k_t.reshape(H * a.kv_lora_rank, a.nope_dim)), H, compute),
            PerHeadLinear(compute.prepare(v), H, compute))


def _stacked(w: QuantWeight) -> QuantWeight:
    """[H, N, K] -> the same bytes as one [H N, K] weight."""
    h, n, k = w.shape
    return QuantWeight(w.raw.reshape(h * n, -1), w.qtype, (h * n, k), w.packed)


def _f32(t: torch.Tensor) -> QuantWeight:
    from gguf import GGMLQuantizationType

    t = t.contiguous()
    return QuantWeight(t.view(torch.uint8).reshape(t.shape[0], -1), GGMLQuantizationType.F32, tuple(t.shape))


def attention_shapes(a: ModelArgs, p: str, present) -> Iterator[tuple[str, list, bool]]:
    """(tensor name, accepted shapes, required) of one layer's MLA tensors (models/shapes.py's format)."""
    D, H, r, dr = a.d_model, a.n_heads, a.kv_lora_rank, a.rope_dim
    qk = a.nope_dim + dr
    if a.q_lora_rank:
        yield p + "attn_q_a.weight", [(a.q_lora_rank, D)], True
        yield p + "attn_q_a_norm.weight", [(a.q_lora_rank,), (1, a.q_lora_rank)], True
        yield p + "attn_q_b.weight", [(H * qk, a.q_lora_rank)], True
    else:
        yield p + "attn_q.weight", [(H * qk, D)], True
    yield p + "attn_kv_a_mqa.weight", [(r + dr, D)], True
    yield p + "attn_kv_a_norm.weight", [(r,), (1, r)], True
    absorbed = p + "attn_k_b.weight" in present
    yield p + "attn_k_b.weight", [(H, r, a.nope_dim)], absorbed
    yield p + "attn_v_b.weight", [(H, a.v_head_dim, r)], absorbed
    yield p + "attn_kv_b.weight", [(H * (a.nope_dim + a.v_head_dim), r)], not absorbed
    yield p + "attn_output.weight", [(D, H * a.v_head_dim)], True


SPEC = ArchSpec(name="deepseek2", rope="norm", norm_topk=False, attention=build_attention,
                attention_shapes=attention_shapes)
