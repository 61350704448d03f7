"""Mixture-of-Experts feed-forward: route -> (streamed) experts -> combine, plus an optional gated shared expert.

The block only sees experts through `experts(x, topk_ids, topk_weights)`; where their weights come from (RAM,
disk, a cache) is decided below that call. Observers see each routing through the block's one named tap,
`on_route(layer, ids, probs)` (the chosen experts and their softmax probabilities, [T, k] each), which the native step
(layers/moe_step.py) calls the same way; they set it, never replace the router."""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from .linear import QuantLinear


class RoutedExperts(Protocol):
    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """x: [T, D], topk_ids/topk_weights: [T, k] -> weighted sum of the chosen experts' outputs, [T, D]."""


class DenseFFN:
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, gate: QuantLinear, up: QuantLinear, down: QuantLinear):
        self.gate, self.up, self.down = gate, up, down

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class SharedExpert:
    """The always-on expert: Qwen2-MoE's is scaled per token by sigmoid(x . w_gate); DeepSeek's and GLM's have no
    gate (gate_inp None) and are added as they are."""

    def __init__(self, ffn: DenseFFN, gate_inp: QuantLinear | None):
        self.ffn, self.gate_inp = ffn, gate_inp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_inp is None:
            return self.ffn(x)
        return torch.sigmoid(self.gate_inp(x)) * self.ffn(x)


class Router:
    """Softmax over all experts, top-k, optionally renormalised so the k weights sum to one."""

    def __init__(self, gate_inp: QuantLinear, k: int, normalize: bool):
        self.gate_inp, self.k, self.normalize = gate_inp, k, normalize

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, weights, _ = self.route(x)
        return ids, weights

    def selection_probs(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, D] -> [T, E] probabilities whose top-k this router picks (what a lookahead predictor reads)."""
        return torch.softmax(self.gate_inp(x).float(), dim=-1)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [T, D] -> ids, weights, probs ([T, k] each; probs: the softmax probabilities before renormalising)."""
        probs = torch.softmax(self.gate_inp(x), dim=-1, dtype=torch.float32)  # [T, E]
        top, ids = torch.topk(probs, self.k, dim=-1)  # [T, k]
        weights = top / top.sum(dim=-1, keepdim=True) if self.normalize else top
        return ids, weights, top


class MoEBlock:
    def __init__(self, router, experts: RoutedExperts, shared: SharedExpert | None = None, layer: int = -1):
        self.router, self.experts, self.shared, self.layer = router, experts, shared, layer
        self.on_route: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None  # the tap: (layer, ids, probs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights, probs = self.router.route(x)
        if self.on_route is not None:
            self.on_route(self.layer, ids, probs)
        out = self.experts(x, ids, weights)
        return out + self.shared(x) if self.shared is not None else out
