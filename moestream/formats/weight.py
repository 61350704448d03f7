"""A tensor kept in its GGUF quant type: raw bytes + type + logical shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from gguf import GGMLQuantizationType

from . import packed as packed_layout
from . import quants


@dataclass(frozen=True)
class QuantWeight:
    """raw: uint8 [rows..., row_bytes], a torch tensor in RAM or a numpy memmap view of bytes left on disk.
    packed: the bytes are in the 8-row packed layout of formats/packed.py (only the native kernels read them as
    they are; everything else unpacks)."""

    raw: torch.Tensor | np.ndarray
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # row-major logical shape, e.g. (out_features, in_features)
    packed: bool = False

    def gguf_bytes(self) -> torch.Tensor | np.ndarray:
        """raw in GGUF block order (a copy if packed)."""
        return packed_layout.unpack(self.raw, self.qtype, self.shape) if self.packed else self.raw

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    def dense(self) -> torch.Tensor:
        """The whole tensor as float32 of `shape`."""
        return quants.dequantize(self.gguf_bytes(), self.qtype, self.shape)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows `index` ([N] int64) of a 2-D weight as float32 [N, cols]; dequantizes only those rows."""
        raw = self.gguf_bytes()
        picked = raw[index.numpy()] if isinstance(raw, np.ndarray) else raw[index]
        return quants.dequantize(picked, self.qtype, (int(index.numel()), self.shape[-1]))

    def expert(self, e: int) -> "QuantWeight":
        """Slice expert `e` of a merged [E, rows, cols] tensor (a view, no copy)."""
        return QuantWeight(self.raw[e], self.qtype, self.shape[1:], self.packed)


class ExpertWeights(NamedTuple):
    """One routed expert's three matrices."""

    gate: QuantWeight  # [F, D]
    up: QuantWeight  # [F, D]
    down: QuantWeight  # [D, F]
