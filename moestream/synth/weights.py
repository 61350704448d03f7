"""Random weights, generated chunk by chunk so memory stays bounded whatever the tensor size.

Quantized tensors are written directly as random Q4_0/Q8_0/MXFP4 blocks, never quantized from floats (that would cost
minutes for a 26 GB file): every block is an fp16 scale d followed by uniformly random quants, and d has a fixed
magnitude and a random sign. Codes are uniform over [-8, 7] (Q4_0) or [-128, 127] (Q8_0), so the random sign makes
every weight zero-mean; |d| is chosen so the weights have std 1/sqrt(fan_in) and each matmul keeps activations
O(1) through any number of layers. MXFP4 blocks share a power-of-two scale, the nearest to that std. Norm weights are 1; the F32 router is normal with the same std."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from .plan import F32, TensorSpec

# E[code^2] with codes uniform over the type's range: Q4_0 nibble - 8 in [-8, 7], Q8_0 int8 in [-128, 127].
CODE_MEAN_SQUARE = {GGMLQuantizationType.Q4_0: 21.5, GGMLQuantizationType.Q8_0: 5461.5}
CHUNK_BYTES = 32 << 20  # generated and written at a time
# MXFP4: E[value^2] of the doubled E2M1 values (0, 1, 2, 3, 4, 6, 8, 12, each signed) under uniform codes
MXFP4_MEAN_SQUARE = 34.25


def tensor_rng(seed: int, name: str) -> np.random.Generator:
    """One stream per tensor, keyed by its name: a tensor's bytes do not depend on the layer count or order."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))


def block_scale(qtype: GGMLQuantizationType, fan_in: int) -> float:
    """|d| of every block so that the weights have std 1/sqrt(fan_in)."""
    return 1.0 / math.sqrt(fan_in * CODE_MEAN_SQUARE[qtype])


def chunks(spec: TensorSpec, seed: int) -> Iterator[np.ndarray]:
    """The tensor's bytes as uint8 arrays of at most CHUNK_BYTES each (the last may be shorter)."""
    rng = tensor_rng(seed, spec.name)
    if spec.qtype == F32:
        yield _float_tensor(rng, spec).view(np.uint8).reshape(-1)
        return
    type_size = GGML_QUANT_SIZES[spec.qtype][1]
    n_blocks = spec.nbytes // type_size
    per_chunk = CHUNK_BYTES // type_size
    if spec.qtype == GGMLQuantizationType.MXFP4:
        make = lambda n: _random_mxfp4_blocks(rng, n, mxfp4_exponent(spec.fan_in))  # noqa: E731
    else:
        d_bits = int(np.array(block_scale(spec.qtype, spec.fan_in), dtype=np.float16).view(np.uint16))
        make = lambda n: _random_blocks(rng, n, type_size, d_bits)  # noqa: E731
    for start in range(0, n_blocks, per_chunk):
        yield make(min(per_chunk, n_blocks - start)).reshape(-1)


def mxfp4_exponent(fan_in: int) -> int:
    """The E8M0 byte of every MXFP4 block: the power of two nearest to giving the weights std 1/sqrt(fan_in) (the
    doubled values are scaled by 2^(e - 128))."""
    return 128 + round(math.log2(1.0 / math.sqrt(fan_in * MXFP4_MEAN_SQUARE)))


def _random_mxfp4_blocks(rng: np.random.Generator, n_blocks: int, exponent: int) -> np.ndarray:
    """[n_blocks, 17] uint8: the shared exponent, then 32 random 4-bit codes (each carries its sign: zero-mean)."""
    n = n_blocks * 17
    blocks = rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n].reshape(n_blocks, 17)
    blocks[:, 0] = exponent
    return blocks


def _random_blocks(rng: np.random.Generator, n_blocks: int, type_size: int, d_bits: int) -> np.ndarray:
    """[n_blocks, type_size] uint8: random quants; bytes 0-1 are the little-endian fp16 scale with a random sign."""
    n = n_blocks * type_size
    # random_raw is the fastest numpy source of random bytes (~2 GB/s, 5x rng.integers on uint8)
    blocks = rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n].reshape(n_blocks, type_size)
    blocks[:, 1] = (blocks[:, 1] & 0x80) | (d_bits >> 8)  # keep the random sign bit
    blocks[:, 0] = d_bits & 0xFF
    return blocks


def _float_tensor(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    # F32 tensors are small (norms: [D] or [head_dim]; router: [E, D]), so one piece is fine
    if spec.is_norm:
        return np.ones(spec.shape, dtype=np.float32)
    return rng.standard_normal(spec.shape, dtype=np.float32) / np.float32(math.sqrt(spec.fan_in))
