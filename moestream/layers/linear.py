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
