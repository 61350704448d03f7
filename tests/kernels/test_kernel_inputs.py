"""Bad inputs to the native kernels fail with a clear KernelInputError from the Python wrappers (also under
`python -O`: no check is an assert), and the C entry points refuse what they can check cheaply (ValueError)
instead of reading past a buffer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.errors import KernelInputError, MoestreamError
from moestream.formats.weight import ExpertWeights, QuantWeight
from moestream.kernels import cpu
from tests.kernels.test_kernels import quantized_weight
from tests.kernels.test_kquant_kernels import _weight as kquant_weight

D, F, T = 64, 96, 3


def q8(n: int, k: int, seed: int = 0) -> QuantWeight:
    return quantized_weight(Q.Q8_0, n, k, seed)


def expert(seed: int = 0, qtype: Q = Q.Q8_0) -> ExpertWeights:
    return ExpertWeights(*(quantized_weight(qtype, n, k, seed + i) for i, (n, k) in enumerate([(F, D), (F, D), (D, F)])))


def with_raw(w: QuantWeight, raw) -> QuantWeight:
    return QuantWeight(raw, w.qtype, w.shape)


W = q8(5, 64)
X = torch.randn(T, 64)
BAD_MATMUL = [  # (case, x, weight, out, words of the error)
    ("qtype", X, QuantWeight(W.raw, Q.IQ2_XXS, W.shape), None, "no native kernel for IQ2_XXS"),
    ("3-D", X, QuantWeight(W.raw, W.qtype, (5, 64, 1)), None, "must be [rows, cols]"),
    ("block", torch.randn(T, 48), QuantWeight(W.raw[:, :51].contiguous(), Q.Q8_0, (5, 48)), None,
     "48 columns is not a multiple of Q8_0's block of 32"),
    ("short", X, with_raw(W, W.raw.flatten()[:-1]), None, "339 raw bytes, but its shape and type take 340"),
    ("int8", X, with_raw(W, W.raw.view(torch.int8)), None, "contiguous uint8"),
    ("strided", X, with_raw(W, torch.cat([W.raw, W.raw], 1)[:, ::2]), None, "contiguous uint8"),
    ("fortran", X, with_raw(W, np.asfortranarray(W.raw.numpy())), None, "contiguous uint8"),
    ("list", X, with_raw(W, W.raw.tolist()), None, "must be a torch tensor or numpy array"),
    ("x-cols", torch.randn(T, 32), W, None, "x is [3, 32], the weight takes rows of 64 columns"),
    ("x-int", torch.ones(T, 64, dtype=torch.int32), W, None, "2-D floating point CPU tensor"),
    ("x-1d", torch.randn(64), W, None, "2-D floating point CPU tensor"),
    ("out-shape", X, W, torch.empty(T, 4), "out must be a contiguous float32 CPU tensor of shape [3, 5]"),
    ("out-dtype", X, W, torch.empty(T, 5, dtype=torch.float64), "out must be"),
    ("out-strided", X, W, torch.empty(5, T).T, "out must be"),
]


@pytest.mark.parametrize("case,x,w,out,needle", BAD_MATMUL, ids=[c[0] for c in BAD_MATMUL])
def test_matmul_rejects(case, x, w, out, needle):
    with pytest.raises(KernelInputError, match=re.escape(needle)) as info:
        cpu.matmul(x, w, 2, out=out)
    assert isinstance(info.value, MoestreamError) and isinstance(info.value, ValueError)


def moe_args(**change):
    """Valid arguments for two experts and T tokens (every token to both), with `change` applied."""
    args = dict(x=torch.randn(T, D), experts=[expert(0), expert(10)], offsets=torch.tensor([0, T, 2 * T]),
                rows=torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32), weights=torch.full((2 * T,), 0.5))
    args.update(change)
    return args


def short_down() -> ExpertWeights:
    e = expert(10)
    return e._replace(down=with_raw(e.down, e.down.raw.flatten()[:-34]))


K_D = 256  # K-quant blocks are 256 wide: a gate/up pair of different activation formats needs d_model % 256 == 0
ZEROS = torch.zeros(6, dtype=torch.int32)
BAD_MOE = [  # (case, changed arguments, words of the error)
    ("none", dict(experts=[]), "at least one expert"),
    ("types", dict(experts=[expert(0), expert(10, Q.Q4_0)]), "one moe_ffn call takes one set of types"),
    ("shape", dict(experts=[expert(0), expert(10)._replace(gate=q8(F, 2 * D))]), "expert 1 is gate Q8_0 [96, 128]"),
    ("shape-0", dict(experts=[expert(0)._replace(up=q8(F, 2 * D))]), "gate and up must be [F, D], down [D, F]"),
    ("short", dict(experts=[expert(0), short_down()]), "expert 1 down"),
    ("x-cols", dict(x=torch.randn(T, 2 * D)), "the weight takes rows of 64"),
    ("offsets-len", dict(offsets=torch.tensor([0, 6])), "offsets must have 3 entries ending at len(rows) = 6"),
    ("offsets-end", dict(offsets=torch.tensor([0, 3, 5])), "offsets must have 3 entries ending at len(rows) = 6"),
    ("offsets-start", dict(offsets=torch.tensor([1, 3, 6])), "offsets must rise from 0"),
    ("decreasing", dict(offsets=torch.tensor([0, 7, 6]), rows=ZEROS), "offsets must rise from 0"),
    ("span", dict(offsets=torch.tensor([0, 0, 6]), rows=ZEROS), "give no expert more than the 3 rows of x"),
    ("offsets-wrap", dict(offsets=torch.tensor([0, 2**32 + 3, 6])), "offsets must fit in int32"),
    ("row-high", dict(rows=torch.tensor([0, 1, 3, 0, 1, 2])), "rows must index x's 3 rows, got values 0..3"),
    ("row-negative", dict(rows=torch.tensor([0, 1, -1, 0, 1, 2])), "rows must index x's 3 rows"),
    ("row-high-int32", dict(rows=torch.tensor([0, 1, 3, 0, 1, 2], dtype=torch.int32)), "rows must index x's 3 rows"),
    ("row-wraps", dict(rows=torch.tensor([0, 1, 2**32, 0, 1, 2])), "rows must fit in int32"),
    ("rows-float", dict(rows=torch.zeros(6)), "rows must be a 1-D integer tensor"),
    ("offsets-float", dict(offsets=torch.tensor([0.0, 3.0, 6.0])), "offsets must be a 1-D integer tensor"),
    ("weights-len", dict(weights=torch.ones(5)), "weights must be floating point with one entry per row"),
    ("weights-int", dict(weights=torch.ones(6, dtype=torch.int64)), "weights must be floating point"),
]


@pytest.mark.parametrize("case,change,needle", BAD_MOE, ids=[c[0] for c in BAD_MOE])
def test_moe_ffn_rejects(case, change, needle):
    a = moe_args(**change)
    with pytest.raises(KernelInputError, match=re.escape(needle)):
        cpu.moe_ffn(a["x"], a["experts"], a["offsets"], a["rows"], a["weights"], 2)


def test_moe_ffn_rejects_gate_and_up_of_different_activation_formats():
    rng = np.random.default_rng(0)
    e = ExpertWeights(quantized_weight(Q.Q8_0, K_D, K_D), kquant_weight(rng, Q.Q4_K, K_D, K_D),
                      kquant_weight(rng, Q.Q4_K, K_D, K_D))
    with pytest.raises(KernelInputError, match="same activation format"):
        cpu.moe_ffn(torch.randn(1, K_D), [e], torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), 1)


def test_valid_moe_args_pass():
    a = moe_args()
    out = cpu.moe_ffn(a["x"], a["experts"], a["offsets"], a["rows"], a["weights"], 2)
    assert out.shape == (T, D) and torch.isfinite(out).all()


def test_wrappers_check_with_raise_not_assert():
    """`python -O` strips asserts, so a check written as one would vanish in optimised runs."""
    tree = ast.parse(Path(cpu.__file__).read_text())
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert not asserts, f"kernels/cpu/__init__.py checks inputs with assert on lines {asserts}"


def test_native_matmul_checks_cheap_invariants():
    x, y = torch.randn(1, 64), torch.empty(1, 5)
    ptr = cpu.data_ptr(W.raw)
    for qtype, rows, cols, match in [(99, 5, 64, "unsupported quant type"), (-1, 5, 64, "unsupported quant type"),
                                     (int(Q.Q8_0), 0, 64, "invalid sizes"), (int(Q.Q8_0), 5, 0, "invalid sizes"),
                                     (int(Q.Q8_0), 5, 48, "invalid sizes"), (int(Q.Q8_0), -5, 64, "invalid sizes")]:
        with pytest.raises(ValueError, match=match):
            cpu._native.matmul(qtype, ptr, rows, cols, x.data_ptr(), 1, y.data_ptr(), 1)


def native_moe(offsets: list[int], rows: list[int], n_tokens: int = T, d_model: int = D, qtype: int = int(Q.Q8_0)):
    e = expert(0)
    ptrs = [torch.tensor([cpu.data_ptr(m.raw)] * (len(offsets) - 1), dtype=torch.int64) for m in e]
    x, out = torch.randn(T, D), torch.zeros(T, D)
    off, r = torch.tensor(offsets, dtype=torch.int32), torch.tensor(rows, dtype=torch.int32)
    w = torch.ones(max(len(rows), 1))
    cpu._native.moe_ffn(x.data_ptr(), n_tokens, d_model, F, qtype, qtype, qtype, len(offsets) - 1,
                        *(p.data_ptr() for p in ptrs), off.data_ptr(), r.data_ptr(), w.data_ptr(), out.data_ptr(), 1)
    return out


@pytest.mark.parametrize("offsets,rows,kw", [
    ([1, 3], [0, 1, 2], {}),  # offsets not from 0
    ([0, 3, 2], [0, 1, 2], {}),  # decreasing
    ([0, 3], [0, 1, 3], {}),  # row out of range
    ([0, 3], [0, -1, 2], {}),  # negative row
    ([0, 4], [0, 1, 2, 0], {}),  # more rows for one expert than x has
    ([0, 3], [0, 1, 2], dict(d_model=48)),  # not a multiple of the block
    ([0, 3], [0, 1, 2], dict(n_tokens=-1)),
], ids=["start", "decreasing", "row-high", "row-negative", "span", "block", "tokens"])
def test_native_moe_checks_cheap_invariants(offsets, rows, kw):
    with pytest.raises(ValueError, match="invalid sizes"):
        native_moe(offsets, rows, **kw)


def test_native_moe_unknown_type_and_valid_call():
    with pytest.raises(ValueError, match="unsupported quant type"):
        native_moe([0, 3], [0, 1, 2], qtype=77)
    assert torch.isfinite(native_moe([0, 3], [0, 1, 2])).all()
