"""Triton kernels over GGUF weights in their own types (the GPU tier's, kernels/dispatch.py's table gains a
"cuda" column from here): `matmul(x, w)` reads each weight block where it lies and decodes it in registers;
`dequantize(w)` writes bf16 (or float32) for the types without a matmul kernel here (the stated fallback: any
type formats/quants.py decodes, through PyTorch, then a dense product).

Shapes: x [T, K] float32, w [N, K] as GGUF rows (N rows of K / QB blocks), y [T, N] float32. One program per
(token, BLOCK_N rows); it walks K a block at a time, decoding BLOCK_N blocks and dotting them with x's slice.
Checked here, before a launch: types, shapes, byte sizes, devices (a kernel gets bare pointers). Off a GPU the
same kernels run under TRITON_INTERPRET=1, which is how CI tests them against the PyTorch references."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...errors import KernelInputError
from ...formats.weight import QuantWeight
from .blocks import GEOMETRY, decode
from .blocks_table import TRITON_TYPES

BLOCK_N = 4  # weight rows per program


@triton.jit
def _matmul(x_ptr, w_ptr, y_ptr, K, N, row_bytes, QTYPE: tl.constexpr, QB: tl.constexpr, BB: tl.constexpr,
            BLOCK_N: tl.constexpr):
    t, nb = tl.program_id(0), tl.program_id(1)
    for r in range(BLOCK_N):
        n = nb * BLOCK_N + r
        if n < N:
            acc = tl.zeros((QB,), dtype=tl.float32)
            for b in range(K // QB):
                values = decode(w_ptr + n * row_bytes + b * BB, QTYPE, QB)
                acc += values * tl.load(x_ptr + t * K + b * QB + tl.arange(0, QB))
            tl.store(y_ptr + t * N + n, tl.sum(acc, axis=0))


@triton.jit
def _dequantize(w_ptr, y_ptr, QTYPE: tl.constexpr, QB: tl.constexpr, BB: tl.constexpr):
    b = tl.program_id(0)
    values = decode(w_ptr + b * BB, QTYPE, QB)
    tl.store(y_ptr + b * QB + tl.arange(0, QB), values.to(y_ptr.dtype.element_ty))


def supports(qtype: int) -> bool:
    return int(qtype) in GEOMETRY


def _check(w: QuantWeight, device: torch.device) -> tuple[int, int, int, int]:
    """-> (N, K, values per block, bytes per block); raises KernelInputError with what is wrong."""
    if not supports(w.qtype):
        raise KernelInputError(f"no Triton kernel for {w.qtype.name}: dequantize it (kernels/triton/gguf.py)")
    qb, bb = GEOMETRY[int(w.qtype)]
    if len(w.shape) != 2 or w.shape[1] % qb:
        raise KernelInputError(f"{w.qtype.name} weight {list(w.shape)}: columns must be a multiple of {qb}")
    n, k = w.shape
    raw = w.raw
    if raw.dtype != torch.uint8 or raw.numel() != n * (k // qb) * bb or not raw.is_contiguous():
        raise KernelInputError(f"{w.qtype.name} weight {list(w.shape)}: expected {n * (k // qb) * bb} contiguous "
                               f"bytes, got {raw.numel()} {raw.dtype}")
    if raw.device != device:
        raise KernelInputError(f"weight on {raw.device}, activations on {device}")
    return n, k, qb, bb


def matmul(x: torch.Tensor, w: QuantWeight) -> torch.Tensor:
    """x [T, K] float32 -> x @ dequantize(w).T, [T, N] float32."""
    n, k, qb, bb = _check(w, x.device)
    if x.dim() != 2 or x.shape[1] != k or x.dtype != torch.float32:
        raise KernelInputError(f"x must be float32 [T, {k}], got {x.dtype} {list(x.shape)}")
    x = x.contiguous()
    y = torch.empty(x.shape[0], n, dtype=torch.float32, device=x.device)
    if x.shape[0]:
        _matmul[(x.shape[0], triton.cdiv(n, BLOCK_N))](x, w.raw, y, k, n, (k // qb) * bb, QTYPE=int(w.qtype),
                                                        QB=qb, BB=bb, BLOCK_N=BLOCK_N)
    return y


def dequantize(w: QuantWeight, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """w -> dense [N, K] in `dtype` (bf16 for the fallback products, float32 for tests)."""
    n, k, qb, bb = _check(w, w.raw.device)
    y = torch.empty(n, k, dtype=dtype, device=w.raw.device)
    blocks = n * (k // qb)
    if blocks:
        _dequantize[(blocks,)](w.raw, y, QTYPE=int(w.qtype), QB=qb, BB=bb)
    return y
