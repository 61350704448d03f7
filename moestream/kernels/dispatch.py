"""One table: (quant type, device) -> matmul kernel, plus the per-layer MoE FFN entry point.

Native CPU kernels serve every GGUF type they implement (activations quantized on the fly, as llama.cpp
does); F32 weights go to PyTorch's BLAS (exact, and faster than a plain dot for prefill); anything else
falls back to the PyTorch reference (dequantize, then matmul)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from gguf import GGMLQuantizationType as Q

from ..errors import ConfigError
from ..formats.weight import ExpertWeights, QuantWeight
from . import cpu, reference

MatmulFn = Callable[[torch.Tensor, QuantWeight, int], torch.Tensor]


def _reference(x: torch.Tensor, w: QuantWeight, threads: int) -> torch.Tensor:
    return reference.matmul(x, w)


def _triton(x: torch.Tensor, w: QuantWeight, threads: int) -> torch.Tensor:
    from .triton import gguf  # imported on first use: triton is optional, and only the GPU tier needs it

    return gguf.matmul(x.float(), w)


def _triton_fallback(x: torch.Tensor, w: QuantWeight, threads: int) -> torch.Tensor:
    """Types without a block-reading kernel: dequantize (PyTorch's decoder) to bf16, then a dense product."""
    dense = w.dense().to(device=x.device, dtype=torch.bfloat16)
    return (x.to(torch.bfloat16) @ dense.T).float()


def build_table() -> dict[tuple[Q, str], MatmulFn]:
    """(type, "cpu"): native kernel, BLAS for F32, else the reference; (type, "cuda"): the Triton kernel that reads
    the type's blocks (kernels/triton/blocks.py), else the dequantize-to-bf16 fallback."""
    from .triton.blocks_table import TRITON_TYPES

    table: dict[tuple[Q, str], MatmulFn] = {}
    native = cpu.kernel_table() if cpu.available() else {}
    for qtype in Q:
        use_native = int(qtype) in native and qtype != Q.F32
        table[(qtype, "cpu")] = cpu.matmul if use_native else _reference
        table[(qtype, "cuda")] = _triton if int(qtype) in TRITON_TYPES else _triton_fallback
    return table


TABLE = build_table()
_ACTIVATION = {qtype: act for qtype, (_, act) in (cpu.kernel_table() if cpu.available() else {}).items()}


@dataclass(frozen=True)
class Compute:
    """How layers run their products: device and thread count (set once when the model is built)."""

    threads: int = cpu.default_threads()
    device: str = "cpu"
    repack: bool = False  # rewrite packable weights into the native kernels' 8-row layout (formats/packed.py)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    def matmul(self, x: torch.Tensor, w: QuantWeight) -> torch.Tensor:
        return TABLE[(w.qtype, self.device)](x, w, self.threads)

    def matmul_heads(self, x: torch.Tensor, w: QuantWeight, n_heads: int) -> torch.Tensor:
        """x [T, H, K], w: H matrices [N, K] stacked as [H N, K] -> [T, H, N] (one product per head)."""
        if self.device == "cpu" and self.is_native(w) and w.shape[0] % n_heads == 0:
            return cpu.matmul_heads(x, w, n_heads, self.threads)
        return reference.matmul_heads(x, w, n_heads)

    def prepare(self, w: QuantWeight) -> QuantWeight:
        """The weight as this Compute runs it best: a packed copy where repack is on and the type packs."""
        return cpu.pack(w, self.threads) if self.repack and self.device == "cpu" and cpu.can_pack(w) else w

    def pack_expert(self, e: ExpertWeights) -> ExpertWeights:
        """An expert's matrices packed in place where they pack (the cache's packer: nothing else reads them)."""
        return ExpertWeights(*(cpu.pack(m, self.threads, in_place=True) if cpu.can_pack(m) else m for m in e))

    def is_native(self, w: QuantWeight) -> bool:
        return self.is_native_type(w.qtype)

    def is_native_type(self, qtype: Q) -> bool:
        return TABLE[(qtype, self.device)] is cpu.matmul

    def moe_ffn(self, x: torch.Tensor, experts: list[ExpertWeights], offsets: torch.Tensor, rows: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        """Selected experts of one layer; rows[offsets[i]:offsets[i+1]] are routed to experts[i]."""
        if all(self.is_native(m) for m in experts[0]) and _same_types(experts) and _shared_activation(experts[0]):
            return cpu.moe_ffn(x, experts, offsets, rows, weights, self.threads)
        spans = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        return reference.moe_ffn(x, experts, [rows[s].long() for s in spans], [weights[s] for s in spans])


def _shared_activation(expert: ExpertWeights) -> bool:
    """The fused kernel quantizes x once for gate and up, so their kernels must take the same activation format
    (a file may mix, e.g., Q4_0 gate with Q4_K up); other pairs go to the reference path."""
    return _ACTIVATION[int(expert.gate.qtype)] == _ACTIVATION[int(expert.up.qtype)]


def _same_types(experts: list[ExpertWeights]) -> bool:
    first = tuple(m.qtype for m in experts[0])
    return all(tuple(m.qtype for m in e) == first for e in experts)
