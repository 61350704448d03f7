"""GGUF blocks decoded inside Triton kernels: one @triton.jit helper per type, `decode(raw, block, QTYPE)` ->
the block's values as float32 [QB], read straight from the file's bytes (uint8), no dequantized copy.

The layouts are formats/quants.py's and formats/kquants.py's (their comments give the byte maps; those
PyTorch decoders are the oracle the tests hold these to). Integer codes: the ggml type numbers."""

from __future__ import annotations

import triton
import triton.language as tl

from .blocks_table import TRITON_TYPES

Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, MXFP4 = 2, 8, 12, 13, 14, 39
# type -> (values per block, bytes per block)
GEOMETRY = {Q4_0: (32, 18), Q8_0: (32, 34), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210), MXFP4: (32, 17)}
assert set(GEOMETRY) == TRITON_TYPES


@triton.jit
def _u8(base, offset):
    return tl.load(base + offset).to(tl.int32)


@triton.jit
def _f16(base, offset):
    # a little-endian fp16 field at base + offset (offset: a scalar or a vector of offsets) -> float32
    bits16 = (_u8(base, offset) | (_u8(base, offset + 1) << 8)).to(tl.uint16)
    return bits16.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _q4_0(p, i):
    # 18 bytes: d fp16, qs[16]; value i < 16: low nibble of qs[i], else the high nibble of qs[i - 16]
    q = (_u8(p, 2 + (i % 16)) >> ((i // 16) * 4)) & 15
    return _f16(p, i * 0) * (q - 8).to(tl.float32)


@triton.jit
def _q8_0(p, i):
    # 34 bytes: d fp16, qs[32] int8
    q = _u8(p, 2 + i)
    q = tl.where(q > 127, q - 256, q)
    return _f16(p, i * 0) * q.to(tl.float32)


@triton.jit
def _mxfp4(p, i):
    # 17 bytes: e (E8M0), qs[16] of E2M1 codes as Q4_0's nibbles; y = (2**(e-127) / 2) * (2 * fp4 value)
    code = (_u8(p, 1 + (i % 16)) >> ((i // 16) * 4)) & 15
    mag, exp2 = code & 7, (code & 7) >> 1
    doubled = tl.where(exp2 == 0, mag & 1, (2 + (mag & 1)) << tl.maximum(exp2 - 1, 0))
    value = tl.where(code >= 8, -doubled, doubled).to(tl.float32)
    e = _u8(p, i * 0)
    half = tl.where(e < 2, 0x00200000 << e, (e - 1) << 23).to(tl.float32, bitcast=True)
    return half * value


@triton.jit
def _k4_scale_min(p, j):
    # Q4_K/Q5_K's 6-bit scale and min of sub-block j (0..7) from the 12 bytes at p + 4 (get_scale_min_k4)
    lo = j < 4
    jj = tl.where(lo, j, j - 4)
    a = _u8(p, 4 + jj)
    b = _u8(p, 8 + jj)
    c = _u8(p, 12 + jj)
    sc = tl.where(lo, a & 63, (c & 15) | ((a >> 6) << 4))
    mn = tl.where(lo, b & 63, (c >> 4) | ((b >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _q4_k(p, i):
    # 144 bytes: d, dmin fp16, scales[12], qs[128]; sub-block j = i // 32 sits in chunk j // 2 (low nibbles for
    # even j, high for odd); y = d * sc * q - dmin * m
    j, l = i // 32, i % 32
    q = (_u8(p, 16 + (j // 2) * 32 + l) >> ((j % 2) * 4)) & 15
    sc, mn = _k4_scale_min(p, j)
    return _f16(p, i * 0) * sc * q.to(tl.float32) - _f16(p, i * 0 + 2) * mn


@triton.jit
def _q5_k(p, i):
    # 176 bytes: d, dmin, scales[12], qh[32], qs[128] (as Q4_K); the 5th bit of element l of sub-block j is
    # bit j of qh[l]
    j, l = i // 32, i % 32
    low = (_u8(p, 48 + (j // 2) * 32 + l) >> ((j % 2) * 4)) & 15
    high = (_u8(p, 16 + l) >> j) & 1
    sc, mn = _k4_scale_min(p, j)
    return _f16(p, i * 0) * sc * (low | (high << 4)).to(tl.float32) - _f16(p, i * 0 + 2) * mn


@triton.jit
def _q6_k(p, i):
    # 210 bytes: ql[128], qh[64], scales[16] int8, d fp16; half h = i // 128, run k of 32 within it: low 4 bits
    # from ql[64h + 32(k % 2) + l] (low nibble for k < 2), high 2 from bits 2k of qh[32h + l]; q - 32
    h, r = i // 128, i % 128
    k, l = r // 32, r % 32
    low = (_u8(p, 64 * h + 32 * (k % 2) + l) >> ((k // 2) * 4)) & 15
    high = (_u8(p, 128 + 32 * h + l) >> (2 * k)) & 3
    q = (low | (high << 4)) - 32
    sc = _u8(p, 192 + i // 16)
    sc = tl.where(sc > 127, sc - 256, sc)
    return _f16(p, i * 0 + 208) * sc.to(tl.float32) * q.to(tl.float32)


@triton.jit
def decode(p, QTYPE: tl.constexpr, QB: tl.constexpr):
    """p: pointer to one block's first byte -> its QB values, float32."""
    i = tl.arange(0, QB)
    if QTYPE == 2:
        return _q4_0(p, i)
    elif QTYPE == 8:
        return _q8_0(p, i)
    elif QTYPE == 12:
        return _q4_k(p, i)
    elif QTYPE == 13:
        return _q5_k(p, i)
    elif QTYPE == 14:
        return _q6_k(p, i)
    else:
        return _mxfp4(p, i)
