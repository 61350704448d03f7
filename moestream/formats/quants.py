"""Reference dequantization of GGUF tensor data in pure PyTorch.

`dequantize(raw, qtype, shape)` turns a tensor's raw bytes into float32 of its row-major logical shape. It
is vectorised over blocks (no Python loop over blocks or rows) and bit-identical to ggml's
`dequantize_row_*` and to `gguf.quants.dequantize`: float operations follow the C reference's order, so
the results serve as the oracle for faster kernels. The K-quant decoders live in `kquants.py`.

Every quant type stores each row as consecutive blocks of `block_size(qtype)` values in
`GGML_QUANT_SIZES[qtype][1]` bytes; all multi-byte fields are little-endian."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import GGUFFormatError, UnsupportedQuantTypeError
from .kquants import bits, dequant_q2_k, dequant_q3_k, dequant_q4_k, dequant_q5_k, dequant_q6_k, f16, nibbles

Q = GGMLQuantizationType


def _dequant_f32(blocks: torch.Tensor) -> torch.Tensor:
    # F32: one little-endian float32 per 4-byte "block".
    return blocks.contiguous().view(torch.float32).clone()


def _dequant_f16(blocks: torch.Tensor) -> torch.Tensor:
    # F16: one IEEE half per 2 bytes; widening to float32 is exact.
    return f16(blocks)


def _dequant_bf16(blocks: torch.Tensor) -> torch.Tensor:
    # BF16: the top 16 bits of a float32; widen by shifting into the high half (exact, keeps NaN payloads).
    wide = blocks.contiguous().view(torch.int16).to(torch.int32) << 16
    return wide.view(torch.float32)


def _dequant_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    # Q4_0, 18 bytes per 32 values: d fp16, qs[16]; element j < 16 is the low nibble of qs[j], element
    # j >= 16 the high nibble of qs[j - 16]. y = d * (q - 8).
    q = nibbles(blocks[:, 2:]).to(torch.int8) - 8
    return f16(blocks[:, :2]) * q.float()


def _dequant_q4_1(blocks: torch.Tensor) -> torch.Tensor:
    # Q4_1, 20 bytes per 32 values: d fp16, m fp16, qs[16] (nibbles as Q4_0). y = d * q + m.
    q = nibbles(blocks[:, 4:]).float()
    return f16(blocks[:, :2]) * q + f16(blocks[:, 2:4])


def _q5_values(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    # 5-bit values of a 32-value block: low 4 bits as the Q4_0 nibbles, the 5th bit of element j is bit j of
    # the little-endian uint32 qh (bit i of byte k is bit 8k + i).
    high = bits(qh, 1, 8).transpose(-1, -2).flatten(-2)
    return nibbles(qs) | (high << 4)


def _dequant_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    # Q5_0, 22 bytes per 32 values: d fp16, qh[4], qs[16]. y = d * (q - 16).
    q = _q5_values(blocks[:, 2:6], blocks[:, 6:]).to(torch.int8) - 16
    return f16(blocks[:, :2]) * q.float()


def _dequant_q5_1(blocks: torch.Tensor) -> torch.Tensor:
    # Q5_1, 24 bytes per 32 values: d fp16, m fp16, qh[4], qs[16]. y = d * q + m.
    q = _q5_values(blocks[:, 4:8], blocks[:, 8:]).float()
    return f16(blocks[:, :2]) * q + f16(blocks[:, 2:4])


def _dequant_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    # Q8_0, 34 bytes per 32 values: d fp16, qs[32] int8. y = d * q.
    q = blocks[:, 2:].contiguous().view(torch.int8).float()
    return f16(blocks[:, :2]) * q


# MXFP4 element values: FP4 E2M1 codes 0..15, doubled so they are integers (the scale is halved to match).
_MXFP4_VALUES = torch.tensor([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=torch.float32)


def _e8m0_half(e: torch.Tensor) -> torch.Tensor:
    # E8M0 scale byte e means 2**(e - 127); return half of it as float32 bits (ggml_e8m0_to_fp32_half):
    # e >= 2 -> exponent field e - 1; e < 2 -> the subnormals 2**-128 and 2**-127.
    e = e.to(torch.int32)
    subnormal = torch.full_like(e, 0x00200000) << e
    return torch.where(e < 2, subnormal, (e - 1) << 23).view(torch.float32)


def _dequant_mxfp4(blocks: torch.Tensor) -> torch.Tensor:
    # MXFP4, 17 bytes per 32 values: e (E8M0 shared scale), qs[16] of 4-bit E2M1 codes, nibbles as Q4_0.
    # y = (2**(e-127) / 2) * (2 * fp4 value).
    codes = nibbles(blocks[:, 1:]).long()
    return _e8m0_half(blocks[:, :1]) * _MXFP4_VALUES[codes]


_DECODERS: dict[GGMLQuantizationType, Callable[[torch.Tensor], torch.Tensor]] = {
    Q.F32: _dequant_f32,
    Q.F16: _dequant_f16,
    Q.BF16: _dequant_bf16,
    Q.Q4_0: _dequant_q4_0,
    Q.Q4_1: _dequant_q4_1,
    Q.Q5_0: _dequant_q5_0,
    Q.Q5_1: _dequant_q5_1,
    Q.Q8_0: _dequant_q8_0,
    Q.Q2_K: dequant_q2_k,
    Q.Q3_K: dequant_q3_k,
    Q.Q4_K: dequant_q4_k,
    Q.Q5_K: dequant_q5_k,
    Q.Q6_K: dequant_q6_k,
    Q.MXFP4: _dequant_mxfp4,
}

SUPPORTED_QTYPES: frozenset[GGMLQuantizationType] = frozenset(_DECODERS)


def _type_name(qtype: object) -> str:
    try:
        return GGMLQuantizationType(qtype).name
    except ValueError:
        return f"<unknown ggml type {qtype!r}>"


def check_supported(qtype: GGMLQuantizationType | int, tensor_name: str) -> None:
    """Raise UnsupportedQuantTypeError unless moestream can dequantize `qtype`."""
    try:
        known = GGMLQuantizationType(qtype) in SUPPORTED_QTYPES
    except ValueError:
        known = False
    if not known:
        supported = ", ".join(t.name for t in sorted(SUPPORTED_QTYPES, key=lambda t: t.value))
        raise UnsupportedQuantTypeError(
            f"tensor {tensor_name} uses quant type {_type_name(qtype)}, which moestream does not support "
            f"(supported: {supported})"
        )


def block_size(qtype: GGMLQuantizationType) -> int:
    """Number of values in one block of `qtype` (1 for the plain float types)."""
    return _sizes(qtype)[0]


def row_bytes(qtype: GGMLQuantizationType, n_cols: int) -> int:
    """Bytes of one row of `n_cols` values; `n_cols` must be a whole number of blocks."""
    block, type_size = _sizes(qtype)
    if n_cols % block != 0:
        raise GGUFFormatError(
            f"a row of {n_cols} values is not a whole number of {_type_name(qtype)} blocks of {block} values"
        )
    return n_cols // block * type_size


def _sizes(qtype: GGMLQuantizationType) -> tuple[int, int]:
    sizes = GGML_QUANT_SIZES.get(qtype)
    if sizes is None:
        raise UnsupportedQuantTypeError(f"quant type {_type_name(qtype)} has no known block size")
    return sizes


def _as_bytes(raw: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Flat uint8 torch view (or, for a read-only numpy buffer, copy) of `raw`; never writes to `raw`."""
    if isinstance(raw, torch.Tensor):
        flat = raw.contiguous().reshape(-1)
        return flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)
    arr = np.ascontiguousarray(np.asarray(raw)).reshape(-1).view(np.uint8)
    if not arr.flags.writeable:
        arr = arr.copy()  # torch.from_numpy warns on read-only arrays (e.g. a GGUF memmap)
    return torch.from_numpy(arr)


def dequantize(
    raw: torch.Tensor | np.ndarray,
    qtype: GGMLQuantizationType,
    shape: tuple[int, ...],
    *,
    tensor_name: str = "?",
) -> torch.Tensor:
    """Decode `raw` (the tensor's bytes, any shape) holding `qtype` data into a fresh float32 tensor of the
    row-major `shape`. Raises UnsupportedQuantTypeError / GGUFFormatError for unknown types or wrong sizes."""
    check_supported(qtype, tensor_name)
    qtype = GGMLQuantizationType(qtype)
    shape = tuple(int(s) for s in shape)
    n_rows = math.prod(shape[:-1])
    expected = n_rows * row_bytes(qtype, shape[-1] if shape else 1)
    data = _as_bytes(raw)
    if data.numel() != expected:
        raise GGUFFormatError(
            f"tensor {tensor_name}: {qtype.name} data of shape {shape} needs {expected} bytes, "
            f"got {data.numel()}"
        )
    _, type_size = GGML_QUANT_SIZES[qtype]
    return _DECODERS[qtype](data.view(-1, type_size)).reshape(shape)
