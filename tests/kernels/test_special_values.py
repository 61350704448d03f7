"""Activation blocks with special values through the native kernels, on the default (AVX2 here) and generic tiers:
zeros, subnormals, values so tiny that 1/scale overflows, +-inf, NaN and huge values (rules: csrc/act_quant.c).

Each row of x puts one kind of special value into its first 256 elements (one AK block, eight A32 blocks).
Checked against kernels/reference.py (finite where it is finite, close there) and against the rules directly:
a block holding NaN or inf makes every output of its row NaN; a zero-scale block contributes exactly nothing
(the row's result is bit-identical to the same row with that block set to 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.formats.weight import ExpertWeights
from moestream.kernels import cpu, reference
from tests.kernels.test_kernels import quantized_weight
from tests.kernels.test_kquant_kernels import _weight as kquant_weight

ROOT = Path(__file__).resolve().parents[2]
TYPES = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_1, Q.Q4_K, Q.Q6_K, Q.F16]
K, N = 512, 9
NONFINITE_ROWS = [4, 5, 6]  # +inf, -inf, NaN
ZERO_SCALE_ROWS = [1, 2, 3]  # zeros, subnormals, tiny normals


def special_x() -> torch.Tensor:
    base = torch.randn(9, K, generator=torch.Generator().manual_seed(5))
    x = base.clone()
    x[1, :256] = 0.0
    x[2, :256] = base[2, :256] * 1e-40  # subnormal floats
    x[3, :256] = base[3, :256] * 1e-38  # normal, but A32's fp16 scale is 0 and AK's -128/max overflows
    x[4, 5] = float("inf")
    x[5, 300] = float("-inf")  # in the second block: the first block of this row is ordinary
    x[6, 7] = float("nan")
    x[7, :256] = base[7, :256] * 1e30  # huge: AK stays finite; A32's fp16 scale is inf (as in llama.cpp)
    x[8, :256] = base[8, :256] * 1e5  # large, still inside every format's range
    return x


def weight(qtype: Q):
    if qtype in (Q.Q4_K, Q.Q6_K):
        return kquant_weight(np.random.default_rng(int(qtype)), qtype, N, K)
    return quantized_weight(qtype, N, K, seed=int(qtype))


def check_type(qtype: Q) -> None:
    x, w = special_x(), weight(qtype)
    got = cpu.matmul(x, w, 2, out=torch.full((x.shape[0], N), 12345.0))
    ref = reference.matmul_act_quantized(x, w)
    assert torch.equal(torch.isfinite(got), torch.isfinite(ref)), (qtype.name, got, ref)
    fin = torch.isfinite(ref)
    slack = 1e-5 * (reference.quantize_activations(x, w.qtype).abs() @ w.dense().abs().T) + 1e-30
    assert ((got - ref).abs()[fin] <= slack[fin]).all(), qtype.name
    if qtype != Q.F16:  # F16 weights take float activations: the exact product, inf stays inf
        assert got[NONFINITE_ROWS].isnan().all(), qtype.name
    assert torch.isfinite(got[[0, 1, 2, 3, 8]]).all(), qtype.name
    zeroed = x.clone()
    zeroed[ZERO_SCALE_ROWS, :256] = 0.0
    if qtype != Q.F16:  # a float dot sums subnormal products: not exactly 0, and it need not be
        assert torch.equal(got[ZERO_SCALE_ROWS], cpu.matmul(zeroed, w, 1)[ZERO_SCALE_ROWS]), qtype.name


def check_moe_nan_stays_in_its_token() -> None:
    """A NaN in one token's activations gives NaN in that token's output only."""
    d, f = 64, 96
    e = ExpertWeights(quantized_weight(Q.Q8_0, f, d, 1), quantized_weight(Q.Q8_0, f, d, 2),
                      quantized_weight(Q.Q8_0, d, f, 3))
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(2))
    offsets, rows, weights = torch.tensor([0, 4]), torch.arange(4, dtype=torch.int32), torch.full((4,), 0.5)
    clean = cpu.moe_ffn(x, [e], offsets, rows, weights, 2)
    x[2, 10] = float("nan")
    dirty = cpu.moe_ffn(x, [e], offsets, rows, weights, 2)
    assert dirty[2].isnan().all()
    assert torch.equal(dirty[[0, 1, 3]], clean[[0, 1, 3]])


def run_all() -> int:
    for qtype in TYPES:
        check_type(qtype)
    check_moe_nan_stays_in_its_token()
    return len(TYPES) + 1


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_special_blocks_default_tier(qtype):
    check_type(qtype)


def test_nan_in_one_token_stays_in_that_token():
    check_moe_nan_stays_in_its_token()


def test_special_blocks_generic_tier():
    env = {**os.environ, "MOESTREAM_KERNEL_TIER": "generic"}
    code = ("from moestream.kernels import cpu; assert {t for t, _ in cpu.kernel_table().values()} == {'generic'}\n"
            "from tests.kernels.test_special_values import run_all; print('checked', run_all())")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"checked {len(TYPES) + 1}" in res.stdout
