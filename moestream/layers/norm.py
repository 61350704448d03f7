"""RMSNorm, computed in float32 in the same order as the reference implementations."""

from __future__ import annotations

import torch


class RMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float):
        self.weight = weight  # [D] float32
        self.eps = eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., D]; normalises over the last dim
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))
