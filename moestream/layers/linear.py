"""Linear layer over a GGUF-typed weight (y = x W^T + b), weight kept in its quant type."""

from __future__ import annotations

import torch

from ..formats.weight import QuantWeight
from .weights import DenseCache


class QuantLinear:
    def __init__(self, weight: QuantWeight, bias: torch.Tensor | None = None):
        self.weight = weight
        self.out_features, self.in_features = weight.shape
        self.bias = bias
        self._dense = DenseCache(weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, in] -> [T, out]
        y = x @ self._dense.get().T
        return y + self.bias if self.bias is not None else y
