"""Reference dequantization of the GGUF K-quant blocks (Q2_K .. Q6_K), plus the small bit-unpacking helpers
that `quants.py` shares. Every decoder takes `blocks`, a uint8 tensor (n_blocks, type_size), and returns
float32 (n_blocks, 256), vectorised over all blocks at once.

K-quants use super-blocks of QK_K = 256 values split into sub-blocks of 16 or 32 values, each sub-block
with its own small integer scale (and for the "asymmetric" types a min) multiplied by one or two fp16
super-block factors. Float operations are done in the same order as ggml's `dequantize_row_*`
(e.g. `(d * sc) * q - (dmin * m)`), so results are bit-identical to the C and `gguf.quants` references."""

from __future__ import annotations

import torch

QK_K = 256


def f16(b: torch.Tensor) -> torch.Tensor:
    """Little-endian fp16 fields (..., 2) uint8 -> float32 (..., 1)."""
    return b.contiguous().view(torch.float16).float()


def bits(x: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Split each uint8 of x (..., k) into `count` fields of `width` bits, lowest first: (..., count, k)."""
    shifts = torch.arange(0, width * count, width, dtype=torch.uint8).view(count, 1)
    return (x.unsqueeze(-2) >> shifts) & ((1 << width) - 1)


def nibbles(x: torch.Tensor) -> torch.Tensor:
    """(..., k) bytes -> (..., 2k): the k low nibbles, then the k high nibbles."""
    return bits(x, 4, 2).flatten(-2)


def dequant_q2_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q2_K, 84 bytes: scales[16] (low nibble: scale, high nibble: min, one pair per 16 values), qs[64]
    # (2-bit values), d fp16, dmin fp16. The 256 values are two halves of 128; each half reads 32 qs bytes
    # four times (shift 0, 2, 4, 6), and each 32-value run is two 16-value sub-blocks. y = d*sc*q - dmin*m.
    n = blocks.shape[0]
    scales, qs = blocks[:, :16], blocks[:, 16:80]
    d, dmin = f16(blocks[:, 80:82]), f16(blocks[:, 82:84])
    dl = (d * (scales & 0xF).float()).view(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).view(n, 16, 1)
    q = bits(qs.reshape(n, 2, 32), 2, 4).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k_scales(packed: torch.Tensor) -> torch.Tensor:
    # 16 signed 6-bit scales (offset 32) in 12 bytes: scale i has its low 4 bits in byte i % 8 (low nibble
    # for i < 8, high nibble otherwise) and its high 2 bits in byte 8 + i % 4 at bit 2 * (i // 4).
    n = packed.shape[0]
    low = nibbles(packed[:, :8])
    high = bits(packed[:, 8:12], 2, 4).reshape(n, 16)
    return (low | (high << 4)).to(torch.int8) - 32


def dequant_q3_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q3_K, 110 bytes: hmask[32] (high bit of each value), qs[64] (low 2 bits, laid out as in Q2_K),
    # scales[12] (16 packed 6-bit scales, one per 16 values), d fp16. Value bit j of hmask[l] belongs to
    # element l of run j (run = half * 4 + shift); q = low2 - (0 if the hmask bit is set else 4).
    n = blocks.shape[0]
    hmask, qs = blocks[:, :32], blocks[:, 32:96]
    sc, d = _q3_k_scales(blocks[:, 96:108]), f16(blocks[:, 108:110])
    low = bits(qs.reshape(n, 2, 32), 2, 4).reshape(n, 8, 32).to(torch.int8)
    high = bits(hmask, 1, 8).to(torch.int8)  # (n, 8 runs, 32)
    q = (low - ((high ^ 1) << 2)).reshape(n, 16, 16).float()
    dl = (d * sc.float()).view(n, 16, 1)
    return (dl * q).reshape(n, QK_K)


def _k4_scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # 8 unsigned 6-bit scales and 8 6-bit mins in 12 bytes (ggml's get_scale_min_k4): for j < 4,
    # scale = b[j] & 63, min = b[j+4] & 63; for j >= 4, scale = low nibble of b[j+4] | (b[j-4] >> 6) << 4,
    # min = high nibble of b[j+4] | (b[j] >> 6) << 4.
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = torch.cat([a & 63, (c & 0xF) | ((a >> 6) << 4)], dim=-1)
    mn = torch.cat([b & 63, (c >> 4) | ((b >> 6) << 4)], dim=-1)
    return sc.float(), mn.float()


def dequant_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q4_K, 144 bytes: d fp16, dmin fp16, scales[12] (8 scales + 8 mins, 6 bits each), qs[128]. Eight
    # sub-blocks of 32: qs byte chunk c (32 bytes) holds sub-block 2c in its low nibbles and 2c+1 in its
    # high nibbles. y = (d * sc) * q - (dmin * m).
    n = blocks.shape[0]
    d, dmin = f16(blocks[:, 0:2]), f16(blocks[:, 2:4])
    sc, mn = _k4_scales_mins(blocks[:, 4:16])
    q = bits(blocks[:, 16:144].reshape(n, 4, 32), 4, 2).reshape(n, 8, 32).float()
    return ((d * sc).view(n, 8, 1) * q - (dmin * mn).view(n, 8, 1)).reshape(n, QK_K)


def dequant_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q5_K, 176 bytes: d fp16, dmin fp16, scales[12] (as Q4_K), qh[32], qs[128] (low 4 bits, as Q4_K).
    # The 5th bit of element l of sub-block j is bit j of qh[l]. y = (d * sc) * q - (dmin * m).
    n = blocks.shape[0]
    d, dmin = f16(blocks[:, 0:2]), f16(blocks[:, 2:4])
    sc, mn = _k4_scales_mins(blocks[:, 4:16])
    low = bits(blocks[:, 48:176].reshape(n, 4, 32), 4, 2).reshape(n, 8, 32)
    high = bits(blocks[:, 16:48], 1, 8)  # (n, 8 sub-blocks, 32)
    q = (low | (high << 4)).float()
    return ((d * sc).view(n, 8, 1) * q - (dmin * mn).view(n, 8, 1)).reshape(n, QK_K)


def dequant_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q6_K, 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8 (one per 16 values),
    # d fp16. Two halves of 128 values (ql 64 bytes, qh 32 bytes each); within a half, run k (32 values)
    # takes the low (k < 2) or high (k >= 2) nibbles of ql[32*(k%2) : +32] and bits 2k..2k+1 of qh.
    # q = (low | high << 4) - 32; y = (d * sc) * q.
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 2, 32)  # (half, chunk, l)
    low = bits(ql, 4, 2).transpose(2, 3).reshape(n, 2, 4, 32)  # (half, nibble, chunk, l): k = 2*nibble+chunk
    high = bits(blocks[:, 128:192].reshape(n, 2, 32), 2, 4)  # (half, k, l)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    sc = blocks[:, 192:208].contiguous().view(torch.int8).float()
    d = f16(blocks[:, 208:210])
    return ((d * sc).view(n, 16, 1) * q).reshape(n, QK_K)
