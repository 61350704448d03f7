"""Qwen3-Next (GGUF architecture `qwen3next`): Qwen3.5-MoE's hybrid stack (models/qwen35moe.py) in an older file
layout. The converter stores the DeltaNet's beta and alpha projections as one tensor, ssm_ba [Hk (2 r), D] (per key
head g: the beta rows of its r = Hv / Hk value heads, then their alpha rows), and the value heads grouped by key
head rather than tiled, so value head j reads key head j div r."""

from __future__ import annotations

from typing import Iterator

import torch

from ..formats.weight import QuantWeight
from ..layers.rope import Rope
from .args import ModelArgs
from .decoder import ArchSpec, Weights
from .qwen35moe import _shared_shapes, deltanet, gated_attention


def build_attention(w: Weights, p: str, layer: int, a: ModelArgs, rope: Rope):
    if not a.is_linear_layer(layer):
        return gated_attention(w, p, layer, a, rope)
    beta, alpha = _split_ba(w[p + "ssm_ba.weight"], a.linear.k_heads)
    return deltanet(w, p, layer, a, w.linear_of(beta), w.linear_of(alpha), tiled=False)


def _split_ba(ba: QuantWeight, k_heads: int) -> tuple[QuantWeight, QuantWeight]:
    """ssm_ba's rows regrouped: beta [Hv, D] and alpha [Hv, D], value heads in the file's (grouped) order. Rows are
    whole blocks in every GGUF type, so the bytes are regrouped as they are."""
    raw = torch.as_tensor(ba.gguf_bytes())
    rows, cols = ba.shape
    per = rows // (2 * k_heads)  # value heads per key head
    grouped = raw.reshape(k_heads, 2 * per, -1)
    beta, alpha = grouped[:, :per].reshape(rows // 2, -1), grouped[:, per:].reshape(rows // 2, -1)
    return (QuantWeight(beta.contiguous(), ba.qtype, (rows // 2, cols)),
            QuantWeight(alpha.contiguous(), ba.qtype, (rows // 2, cols)))


def attention_shapes(a: ModelArgs, p: str, present) -> Iterator[tuple[str, list, bool]]:
    yield from _shared_shapes(a, p)
    if a.is_linear_layer(int(p.split(".")[1])):
        yield p + "ssm_ba.weight", [(2 * a.linear.v_heads, a.d_model)], True


SPEC = ArchSpec(name="qwen3next", rope="neox", norm_topk=True, shared_gate=True, ffn_norm="post_attention_norm",
                attention=build_attention, attention_shapes=attention_shapes)
