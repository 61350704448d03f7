"""Routed experts computed one distinct expert at a time over all tokens routed to it.

Weights come from an `ExpertSource` (RAM now; a byte-budgeted streaming cache later), so the MoE block and the
models never know where expert bytes live."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ..formats.weight import ExpertWeights


class ExpertSource(Protocol):
    def get(self, layer: int, expert: int) -> ExpertWeights: ...


class ExpertFFNs:
    """Implements `RoutedExperts` for one layer."""

    def __init__(self, layer: int, source: ExpertSource):
        self.layer, self.source = layer, source

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        # x: [T, D]; topk_ids, topk_weights: [T, k]
        out = torch.zeros_like(x)
        for expert in torch.unique(topk_ids).tolist():
            tokens, slots = (topk_ids == expert).nonzero(as_tuple=True)
            y = expert_ffn(x[tokens], self.source.get(self.layer, expert))
            out.index_add_(0, tokens, y * topk_weights[tokens, slots, None])
        return out


def expert_ffn(x: torch.Tensor, w: ExpertWeights) -> torch.Tensor:
    # x: [t, D] -> [t, D]; down(silu(gate(x)) * up(x))
    h = F.silu(x @ w.gate.dense().T) * (x @ w.up.dense().T)
    return h @ w.down.dense().T
