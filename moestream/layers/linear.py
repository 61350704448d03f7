"""Linear layer over a GGUF-typed weight (y = x W^T + b); the weight stays in its quant type and the product
runs through kernels.dispatch (native kernels where they exist, the PyTorch reference otherwise)."""

from __future__ import annotations

import torch

from ..formats.weight import QuantWeight
from ..kernels.dispatch import Compute
from .weights import DenseCache


class QuantLinear:
    def __init__(self, weight: QuantWeight, bias: torch.Tensor | None = None, compute: Compute | None = None):
        self.weight, self.bias = weight, bias
        self.out_features, self.in_features = weight.shape
        self.compute = compute or Compute()
        # Only weights without a native kernel keep a float32 copy (F32 itself: a view, no copy).
        self._dense = None if self.compute.is_native(weight) else DenseCache(weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, in] -> [T, out]
        y = self.compute.matmul(x, self.weight) if self._dense is None else x @ self._dense.get().T
        return y + self.bias if self.bias is not None else y


class PerHeadLinear:
    """H projections of the same shape, one per head: y[t, h] = W_h x[t, h]. weight: the H matrices [N, K] stacked
    as one [H N, K] weight, run by one native call for all heads (MLA's up-projections, layers/mla.py)."""

    def __init__(self, weight: QuantWeight, n_heads: int, compute: Compute | None = None):
        if weight.shape[0] % n_heads:
            raise ValueError(f"{weight.shape[0]} rows do not split into {n_heads} heads")
        self.weight, self.n_heads = weight, n_heads
        self.compute = compute or Compute()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, H, K] -> [T, H, N]
        return self.compute.matmul_heads(x, self.weight, self.n_heads)
