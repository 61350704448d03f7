"""The packed ("_R8") layout of a 2-D GGUF-typed weight, in PyTorch: the reference for kernels/cpu/csrc/packed.c.

Rows come in groups of 8 that keep their byte range; inside a group, block column b holds the 8 rows' fp16
scales (16 bytes), then their quants in 32-byte chunks, chunk c holding bytes 4c..4c+3 of each row's quants in row
order. The native kernels then compute 8 rows per pass with one vector of partial sums (lane r = row r). Same
bytes, same size, only moved, so a packed weight fits where its GGUF bytes did (a cache slot, in place).

Only the 32-element types whose block is an fp16 scale then the quants are packed (Q4_0, Q8_0); any other type,
a weight whose row count is not a multiple of 8, or bytes left in the file (a memory map) stay in GGUF order."""

from __future__ import annotations

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

ROWS = 8
QUANT_BYTES = {Q.Q4_0: 16, Q.Q8_0: 32}  # quant bytes per block, after the 2-byte scale


def packable(qtype: Q, shape: tuple[int, ...]) -> bool:
    return qtype in QUANT_BYTES and len(shape) == 2 and shape[0] % ROWS == 0 and shape[0] > 0


def _dims(raw: torch.Tensor, qtype: Q, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(groups, block columns, quant bytes per block), checked against the bytes."""
    if not packable(qtype, shape):
        raise ValueError(f"{qtype.name} {list(shape)} has no packed layout")
    block, size = GGML_QUANT_SIZES[qtype]
    nb = shape[1] // block
    if raw.numel() != shape[0] * nb * size:
        raise ValueError(f"{raw.numel()} bytes for {qtype.name} {list(shape)}, expected {shape[0] * nb * size}")
    return shape[0] // ROWS, nb, QUANT_BYTES[qtype]


def pack(raw: torch.Tensor, qtype: Q, shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 GGUF bytes of a [rows, cols] weight -> the same bytes packed, [rows, row_bytes]."""
    g, nb, q = _dims(raw, qtype, shape)
    blocks = raw.reshape(g, ROWS, nb, 2 + q)
    scales = blocks[..., :2].permute(0, 2, 1, 3).reshape(g, nb, 2 * ROWS)  # [g, b, r * 2]
    quants = blocks[..., 2:].reshape(g, ROWS, nb, q // 4, 4).permute(0, 2, 3, 1, 4).reshape(g, nb, ROWS * q)
    return torch.cat([scales, quants], dim=2).reshape(shape[0], -1).contiguous()


def unpack(raw: torch.Tensor, qtype: Q, shape: tuple[int, ...]) -> torch.Tensor:
    """Packed bytes -> GGUF bytes, [rows, row_bytes] (the inverse of `pack`)."""
    g, nb, q = _dims(raw, qtype, shape)
    cols = raw.reshape(g, nb, ROWS * (2 + q))
    scales = cols[..., :2 * ROWS].reshape(g, nb, ROWS, 2).permute(0, 2, 1, 3)  # [g, r, b, 2]
    quants = cols[..., 2 * ROWS:].reshape(g, nb, q // 4, ROWS, 4).permute(0, 3, 1, 2, 4).reshape(g, ROWS, nb, q)
    return torch.cat([scales, quants], dim=3).reshape(shape[0], -1).contiguous()
