"""moestream.formats.quants must decode every supported GGUF quant type bit-for-bit like gguf.quants."""

from __future__ import annotations

import warnings

import gguf.quants
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from moestream.errors import GGUFFormatError, UnsupportedQuantTypeError
from moestream.formats.quants import SUPPORTED_QTYPES, block_size, check_supported, dequantize, row_bytes

ALL_TYPES = sorted(SUPPORTED_QTYPES, key=lambda t: t.value)
FLOAT_TYPES = {Q.F32: np.float32, Q.F16: np.float16, Q.BF16: None}
# Byte offsets of the fp16 scale fields inside one block (written independently of the implementation, from
# the block structs in ggml-common.h).
FP16_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    Q.MXFP4: [],  # its scale is an E8M0 byte at offset 0, handled in _finite_bytes
}
# (rows, blocks per row) and a 3-d case; the logical shape is (*lead, blocks * block_size)
LAYOUTS = [((1,), 1), ((3,), 2), ((17,), 3), ((2, 3), 2)]
QUANTIZABLE = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.MXFP4]


def _shape(qtype: Q, lead: tuple[int, ...], n_blocks: int) -> tuple[int, ...]:
    bs = GGML_QUANT_SIZES[qtype][0]
    per_row = n_blocks * (bs if bs > 1 else 32)  # float types: 32 * n_blocks values per row
    return (*lead, per_row)


def _random_bytes(rng: np.random.Generator, qtype: Q, shape: tuple[int, ...]) -> np.ndarray:
    n_rows = int(np.prod(shape[:-1]))
    return rng.integers(0, 256, size=(n_rows, row_bytes(qtype, shape[-1])), dtype=np.uint8)


def _finite_bytes(rng: np.random.Generator, qtype: Q, shape: tuple[int, ...]) -> np.ndarray:
    """Random block bytes whose fp16 scale fields hold random finite values (float types: random floats)."""
    if qtype in FLOAT_TYPES:
        values = rng.standard_normal(shape).astype(np.float32) * 4
        return gguf.quants.quantize(values, qtype).view(np.uint8).reshape(int(np.prod(shape[:-1])), -1)
    raw = _random_bytes(rng, qtype, shape)
    blocks = raw.reshape(-1, GGML_QUANT_SIZES[qtype][1])
    for off in FP16_FIELDS[qtype]:
        scales = rng.uniform(-3.0, 3.0, size=blocks.shape[0]).astype(np.float16)
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(-1, 2)
    if qtype == Q.MXFP4:  # E8M0 scale byte at offset 0: keep 2**(e-127) well inside float32 range
        blocks[:, 0] = rng.integers(100, 150, size=blocks.shape[0], dtype=np.uint8)
    return raw


def _reference(raw: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> np.ndarray:
    with np.errstate(all="ignore"):  # random scales overflow or give NaN in gguf's numpy code too
        out = gguf.quants.dequantize(raw, qtype)  # (rows, cols) with cols in elements
    return np.asarray(out, dtype=np.float32).reshape(shape)


def _check(raw: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> torch.Tensor:
    ours = dequantize(raw, qtype, shape)
    assert ours.dtype == torch.float32 and tuple(ours.shape) == shape
    np.testing.assert_array_equal(ours.numpy(), _reference(raw, qtype, shape))
    return ours


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("lead,n_blocks", LAYOUTS)
def test_matches_gguf_with_finite_scales(qtype: Q, lead: tuple[int, ...], n_blocks: int) -> None:
    rng = np.random.default_rng([qtype.value, n_blocks, *lead])
    shape = _shape(qtype, lead, n_blocks)
    ours = _check(_finite_bytes(rng, qtype, shape), qtype, shape)
    assert torch.isfinite(ours).all()


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_matches_gguf_with_fully_random_bytes(qtype: Q) -> None:
    rng = np.random.default_rng(1000 + qtype.value)
    shape = _shape(qtype, (17,), 3)
    _check(_random_bytes(rng, qtype, shape), qtype, shape)


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda t: t.name)
def test_round_trip_through_gguf_quantize(qtype: Q) -> None:
    rng = np.random.default_rng(7)
    shape = (5, 128)
    values = rng.standard_normal(shape).astype(np.float32)
    raw = np.ascontiguousarray(gguf.quants.quantize(values, qtype)).view(np.uint8).reshape(5, -1)
    ours = _check(raw, qtype, shape)
    # sanity: the decoded values approximate the originals (coarse bound fits the 4-bit types)
    assert np.abs(ours.numpy() - values).max() < 0.6


def test_accepts_torch_tensor_and_flat_buffer() -> None:
    rng = np.random.default_rng(3)
    shape = (3, 512)
    raw = _finite_bytes(rng, Q.Q4_K, shape)
    expected = _reference(raw, Q.Q4_K, shape)
    np.testing.assert_array_equal(dequantize(torch.from_numpy(raw), Q.Q4_K, shape).numpy(), expected)
    np.testing.assert_array_equal(dequantize(raw.reshape(-1), Q.Q4_K, shape).numpy(), expected)


def test_read_only_memmap_without_warning(tmp_path) -> None:
    rng = np.random.default_rng(4)
    shape = (3, 64)
    raw = _finite_bytes(rng, Q.Q8_0, shape)
    path = tmp_path / "blob.bin"
    raw.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = dequantize(mm, Q.Q8_0, shape)
    np.testing.assert_array_equal(ours.numpy(), _reference(raw, Q.Q8_0, shape))


def test_f32_output_is_a_fresh_tensor() -> None:
    values = np.arange(12, dtype=np.float32)
    raw = values.view(np.uint8)
    out = dequantize(raw, Q.F32, (3, 4))
    out += 1
    np.testing.assert_array_equal(values, np.arange(12, dtype=np.float32))
    np.testing.assert_array_equal(out.numpy().ravel(), values + 1)


def test_size_helpers() -> None:
    assert block_size(Q.Q4_K) == 256 and block_size(Q.Q8_0) == 32 and block_size(Q.F16) == 1
    assert row_bytes(Q.Q4_K, 512) == 288
    assert row_bytes(Q.Q8_0, 64) == 68
    assert row_bytes(Q.BF16, 10) == 20
    assert row_bytes(Q.MXFP4, 64) == 34
    with pytest.raises(GGUFFormatError, match="Q4_0"):
        row_bytes(Q.Q4_0, 33)


@pytest.mark.parametrize("qtype", [Q.IQ2_XXS, Q.Q8_1, Q.IQ4_NL], ids=lambda t: t.name)
def test_unsupported_type(qtype: Q) -> None:
    expected = rf"tensor blk\.0\.ffn_up uses quant type {qtype.name}, which moestream does not support"
    with pytest.raises(UnsupportedQuantTypeError, match=expected):
        check_supported(qtype, "blk.0.ffn_up")
    with pytest.raises(UnsupportedQuantTypeError, match=r"supported: F32, F16, Q4_0"):
        dequantize(np.zeros(1024, dtype=np.uint8), qtype, (1, 256))


def test_supported_types_pass_check() -> None:
    for qtype in ALL_TYPES:
        check_supported(qtype, "x")
    assert set(FP16_FIELDS) | set(FLOAT_TYPES) == set(SUPPORTED_QTYPES)


def test_wrong_byte_count() -> None:
    raw = np.zeros(row_bytes(Q.Q4_0, 64) * 3 - 1, dtype=np.uint8)
    with pytest.raises(GGUFFormatError, match=r"needs 108 bytes, got 107"):
        dequantize(raw, Q.Q4_0, (3, 64))
    with pytest.raises(GGUFFormatError, match="whole number"):
        dequantize(np.zeros(18, dtype=np.uint8), Q.Q4_0, (1, 30))
