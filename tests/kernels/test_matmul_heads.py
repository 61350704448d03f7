"""matmul_heads (one product per head in one native call, for MLA's up-projections) against the PyTorch reference
with the same activation rounding, and against H separate matmul calls bit for bit: GGUF-order and packed Q8_0/Q4_0,
Q4_K, 1..8 heads, T = 0, 1, 5, 2 threads; bad shapes are refused with a KernelInputError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.errors import KernelInputError
from moestream.formats.weight import QuantWeight
from moestream.kernels import cpu, reference
from tests.kernels.test_kernels import quantized_weight
from tests.kernels.test_kquant_kernels import _weight as kquant_weight

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the native extension is not built")

CASES = [(Q.Q8_0, 4, 32, 64, False), (Q.Q4_0, 3, 48, 96, True), (Q.Q8_0, 8, 16, 32, True), (Q.Q4_K, 2, 16, 256, False),
         (Q.Q8_0, 1, 24, 64, False)]


def weight(qtype: Q, heads: int, rows: int, cols: int, packed: bool) -> QuantWeight:
    w = kquant_weight(np.random.default_rng(5), qtype, heads * rows, cols) if qtype == Q.Q4_K else \
        quantized_weight(qtype, heads * rows, cols, seed=heads)
    return cpu.pack(w, 2) if packed else w


@pytest.mark.parametrize("t", [0, 1, 5])
@pytest.mark.parametrize("qtype,heads,rows,cols,packed", CASES,
                         ids=[f"{q.name}-H{h}-{r}x{c}{'-packed' if p else ''}" for q, h, r, c, p in CASES])
def test_matches_the_reference_and_separate_calls(t, qtype, heads, rows, cols, packed):
    w = weight(qtype, heads, rows, cols, packed)
    x = torch.randn(t, heads, cols, generator=torch.Generator().manual_seed(t))
    y = cpu.matmul_heads(x, w, heads, 2)
    assert y.shape == (t, heads, rows) and not y.isnan().any()
    ref = reference.matmul_heads(x, w, heads, act_quantized=True)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(ref.abs().max()) if t else 1.0))
    for h in range(heads):  # the same kernel row by row: bit-identical to one matmul per head
        w_h = QuantWeight(w.raw.reshape(heads, rows, -1)[h].contiguous(), w.qtype, (rows, cols), w.packed)
        assert torch.equal(y[:, h], cpu.matmul(x[:, h].contiguous(), w_h, 2))


def test_refuses_shapes_that_do_not_fit():
    w = quantized_weight(Q.Q8_0, 64, 64)
    with pytest.raises(KernelInputError, match="do not split into 3 heads"):
        cpu.matmul_heads(torch.zeros(1, 3, 64), w, 3, 2)
    with pytest.raises(KernelInputError, match=r"x must be \[T, 4, 64\]"):
        cpu.matmul_heads(torch.zeros(1, 4, 32), w, 4, 2)
    with pytest.raises(KernelInputError, match=r"x must be"):
        cpu.matmul_heads(torch.zeros(4, 64), w, 4, 2)
    with pytest.raises(KernelInputError, match="heads"):
        cpu.matmul_heads(torch.zeros(1, 0, 64), w, 0, 2)
