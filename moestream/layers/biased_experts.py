"""gpt-oss's routed experts: every projection has a per-expert bias, and the activation is a clamped SwiGLU.

  g = x W_gate^T + b_gate,  u = x W_up^T + b_up                   (per expert; biases [E, F], resident)
  h = min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(u, -limit, limit) + 1)
  y = h W_down^T + b_down                                          (b_down [E, D])

Weights stream from the same `ExpertSource` as every other architecture's (cache, memory map); each (token, slot)
pair's output gets its own row and the k rows of a token are summed in slot order, as in layers/experts.py, so the
result does not depend on the order in which experts arrive (a miss cannot change the logits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.dispatch import Compute
from .experts import ExpertRows, ExpertSource


@dataclass(frozen=True)
class ExpertBiases:
    gate: torch.Tensor  # [E, F]
    up: torch.Tensor  # [E, F]
    down: torch.Tensor  # [E, D]


def clamped_swiglu(gate: torch.Tensor, up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gpt-oss's GLU: the gate clamped from above, the up projection on both sides and shifted by one."""
    gate = gate.clamp(max=limit)
    return gate * torch.sigmoid(alpha * gate) * (up.clamp(-limit, limit) + 1)


class BiasedExpertFFNs(ExpertRows):
    """Implements `RoutedExperts` (layers/moe.py) for one layer."""

    def __init__(self, layer: int, source: ExpertSource, biases: ExpertBiases, compute: Compute,
                 alpha: float, limit: float):
        self.layer, self.source, self.biases, self.compute = layer, source, biases, compute
        self.alpha, self.limit = alpha, limit

    def _compute(self, x, experts: list[int], index: list[int], offsets, pairs, w_flat, out, k: int) -> None:
        """experts[index[j]] for each j, computed here (the others are another rank's)."""
        if not index:
            return
        for batch in self.source.acquire(self.layer, [experts[i] for i in index]):
            for j, weights in batch:
                i = index[j]
                dest = pairs[offsets[i]:offsets[i + 1]]
                out[dest] = self._expert(experts[i], weights, x[dest // k]) * w_flat[dest, None]

    def _expert(self, e: int, w, x: torch.Tensor) -> torch.Tensor:
        # x: [n, D] rows routed to expert e -> [n, D]
        b, mm = self.biases, self.compute.matmul
        h = clamped_swiglu(mm(x, w.gate) + b.gate[e], mm(x, w.up) + b.up[e], self.alpha, self.limit)
        return mm(h, w.down) + b.down[e]
