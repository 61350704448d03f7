"""Dense views of GGUF-typed weights for the reference compute path."""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType

from ..formats.weight import QuantWeight


class DenseCache:
    """Holds F32/F16/BF16 weights as float32 once (cheap); quantized weights are dequantized per use so RAM
    holds only their GGUF bytes."""

    CONVERT_ONCE = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}

    def __init__(self, weight: QuantWeight):
        self.weight = weight
        self._dense = weight.dense() if weight.qtype in self.CONVERT_ONCE else None

    def get(self) -> torch.Tensor:
        return self._dense if self._dense is not None else self.weight.dense()
