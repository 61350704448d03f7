"""Routed experts: tokens are grouped by expert with vectorised torch ops, then one call computes every
selected expert of the layer over the tokens routed to it (native fused kernel, or the reference loop).

Weights come from an `ExpertSource` (RAM now; a byte-budgeted streaming cache later), so the MoE block and the
models never know where expert bytes live."""

from __future__ import annotations

from typing import Protocol

import torch

from ..formats.weight import ExpertWeights
from ..kernels.dispatch import Compute


class ExpertSource(Protocol):
    def get(self, layer: int, expert: int) -> ExpertWeights: ...


class ExpertFFNs:
    """Implements `RoutedExperts` for one layer."""

    def __init__(self, layer: int, source: ExpertSource, compute: Compute | None = None):
        self.layer, self.source, self.compute = layer, source, compute or Compute()

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        # x: [T, D]; topk_ids, topk_weights: [T, k]
        experts, offsets, rows, weights = group_by_expert(topk_ids, topk_weights)
        selected = [self.source.get(self.layer, e) for e in experts]
        return self.compute.moe_ffn(x, selected, offsets, rows, weights)


def group_by_expert(topk_ids: torch.Tensor, topk_weights: torch.Tensor):
    """-> (distinct expert ids, offsets [n+1], token rows, weights), rows sorted by expert, stable by token."""
    k = topk_ids.shape[1]
    flat = topk_ids.flatten()
    order = torch.argsort(flat, stable=True)
    experts, counts = torch.unique_consecutive(flat[order], return_counts=True)
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int32)
    offsets[1:] = counts.cumsum(0)
    return experts.tolist(), offsets, order // k, topk_weights.flatten()[order]
