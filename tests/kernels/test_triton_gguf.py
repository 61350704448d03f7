"""The Triton GGUF kernels (kernels/triton/gguf.py) against the PyTorch decoders, under TRITON_INTERPRET=1 (no GPU
here): every type's dequantize bit for bit, and the block-reading matmul against dequantize-then-matmul, on small
shapes with valid scales and every code of every field random."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton decorates the kernels

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402

from moestream.errors import KernelInputError  # noqa: E402
from moestream.formats import quants  # noqa: E402
from moestream.formats.weight import QuantWeight  # noqa: E402
from moestream.kernels.triton import gguf as tg  # noqa: E402
from moestream.kernels.triton.blocks import GEOMETRY  # noqa: E402

TYPES = [Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.MXFP4]
SCALES = {Q.Q4_0: [0], Q.Q8_0: [0], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}  # fp16 fields per block


def random_weight(qtype: Q, n: int, k: int, seed: int) -> QuantWeight:
    qb, bb = GEOMETRY[int(qtype)]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n * (k // qb), bb), dtype=np.uint8)
    for at in SCALES.get(qtype, []):  # finite scales (random bytes would make some fp16 fields inf or NaN)
        scale = rng.uniform(-0.05, 0.05, size=len(blocks)).astype(np.float16)
        blocks[:, at:at + 2] = scale.view(np.uint8).reshape(-1, 2)
    if qtype == Q.MXFP4:
        blocks[:, 0] = rng.integers(0, 140, size=len(blocks))  # E8M0, subnormal halves (0, 1) included
    return QuantWeight(torch.from_numpy(blocks.reshape(n, -1).copy()), qtype, (n, k))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_dequantize_matches_the_reference_bit_for_bit(qtype):
    w = random_weight(qtype, 3, 512, seed=int(qtype))
    want = quants.dequantize(w.raw, qtype, w.shape)
    got = tg.dequantize(w, torch.float32)
    assert torch.equal(got, want.view(w.shape).float())
    # the fallback's bf16: within one bf16 step (Triton's interpreter truncates where a GPU rounds to nearest)
    torch.testing.assert_close(tg.dequantize(w).float(), want.view(w.shape).float(), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_matmul_reads_blocks_in_place(qtype):
    w = random_weight(qtype, 6, 256, seed=100 + int(qtype))  # 6 rows: a partial BLOCK_N group at the end
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(1))
    want = x @ quants.dequantize(w.raw, qtype, w.shape).view(w.shape).float().T
    scale = float(want.abs().max())  # the sum order differs: float32 rounding of terms up to this size
    torch.testing.assert_close(tg.matmul(x, w), want, rtol=1e-5, atol=1e-5 * scale)


def test_bad_inputs_are_refused_before_a_launch():
    w = random_weight(Q.Q4_0, 2, 64, seed=1)
    with pytest.raises(KernelInputError, match=r"x must be float32 \[T, 64\]"):
        tg.matmul(torch.zeros(1, 32), w)
    with pytest.raises(KernelInputError, match="expected 72 contiguous bytes"):
        tg.matmul(torch.zeros(1, 64), QuantWeight(w.raw[:, :10], Q.Q4_0, (2, 64)))
    with pytest.raises(KernelInputError, match="no Triton kernel for Q2_K"):
        tg.matmul(torch.zeros(1, 256), QuantWeight(torch.zeros(1, 84, dtype=torch.uint8), Q.Q2_K, (1, 256)))
    with pytest.raises(KernelInputError, match="multiple of 32"):
        tg.dequantize(QuantWeight(torch.zeros(1, 18, dtype=torch.uint8), Q.Q4_0, (1, 33)))


def test_the_dispatch_table_has_a_cuda_column():
    from moestream.kernels import dispatch

    assert all(dispatch.TABLE[(q, "cuda")] is dispatch._triton for q in TYPES)
    assert dispatch.TABLE[(Q.Q4_1, "cuda")] is dispatch._triton_fallback
    w = random_weight(Q.Q4_K, 2, 256, seed=5)
    x = torch.randn(1, 256, generator=torch.Generator().manual_seed(2))
    want = x @ quants.dequantize(w.raw, w.qtype, w.shape).view(w.shape).float().T
    scale = float(want.abs().max())
    torch.testing.assert_close(dispatch.TABLE[(Q.Q4_K, "cuda")](x, w, 1), want, rtol=1e-5, atol=1e-5 * scale)
    # the fallback: bf16 products (Q4_1 has no block-reading kernel here)
    q41 = QuantWeight(torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 40), dtype=np.uint8)),
                      Q.Q4_1, (2, 64))
    q41.raw[:, 0:4] = torch.tensor([0, 0x20, 0, 0x20], dtype=torch.uint8)  # d = m = 2**-7 (fp16 0x2000)
    q41.raw[:, 20:24] = torch.tensor([0, 0x20, 0, 0x20], dtype=torch.uint8)
    x64 = torch.randn(1, 64, generator=torch.Generator().manual_seed(4))
    want41 = x64 @ q41.dense().T
    torch.testing.assert_close(dispatch.TABLE[(Q.Q4_1, "cuda")](x64, q41, 1), want41, rtol=2e-2, atol=2e-2)
