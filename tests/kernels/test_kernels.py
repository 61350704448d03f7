"""Native CPU kernels against kernels/reference.py on real quantized data (gguf.quants), odd shapes included,
outputs poisoned with NaN first so an unwritten element fails.

Error bound (documented): activations are rounded per block of 32 to int8 with scale s_b = amax_b / 127, so
each activation moves by at most s_b / 2 and |native - exact| <= sum_i |w_i| * s_{b(i)} / 2 per output.
Against the reference that rounds activations the same way, the only difference is float summation order."""

from __future__ import annotations

import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.formats.weight import ExpertWeights, QuantWeight
from moestream.kernels import cpu, reference
from moestream.kernels.dispatch import Compute
from moestream.layers.experts import group_by_expert

LEGACY = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.MXFP4]  # MXFP4: gpt-oss's experts (E8M0 scale, FP4 codes)
FLOATS = [Q.F32, Q.F16, Q.BF16]
SHAPES = [(1, 32, 1), (3, 96, 3), (17, 256, 17), (33, 4096, 1), (5, 512, 64)]  # (N rows, K cols, T tokens)


def quantized_weight(qtype: Q, n: int, k: int, seed: int = 0) -> QuantWeight:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.2, 2.0, (n, 1)).astype(np.float32)
    raw = gguf.quants.quantize(data, qtype)
    if raw.dtype != np.uint8:
        raw = raw.view(np.uint8)
    return QuantWeight(torch.from_numpy(np.ascontiguousarray(raw)), qtype, (n, k))


def activations(t: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(t, k, generator=torch.Generator().manual_seed(seed)) * 3


def act_error_bound(x: torch.Tensor, w: QuantWeight) -> torch.Tensor:
    scale = x.reshape(x.shape[0], -1, 32).abs().amax(-1) / 127  # [T, K/32]
    per_elem = scale.repeat_interleave(32, dim=1) / 2  # [T, K]
    return per_elem @ w.dense().abs().T  # [T, N]


def poisoned(t: int, n: int) -> torch.Tensor:
    return torch.full((t, n), float("nan"))


@pytest.mark.parametrize("qtype", LEGACY + FLOATS, ids=lambda q: q.name)
@pytest.mark.parametrize("n,k,t", SHAPES)
def test_matmul_matches_reference(qtype, n, k, t):
    w, x = quantized_weight(qtype, n, k), activations(t, k)
    out = cpu.matmul(x, w, n_threads=2, out=poisoned(t, n))
    assert not out.isnan().any(), "some outputs were not written"
    same_rounding = reference.matmul_act_quantized(x, w)
    scale = x.abs() @ w.dense().abs().T  # |x|.|w| per output: the size float rounding is relative to
    assert ((out - same_rounding).abs() <= 1e-5 * scale + 1e-6).all()
    exact = reference.matmul(x, w)
    bound = act_error_bound(x, w) if qtype not in FLOATS else 1e-5 * scale
    assert ((out - exact).abs() <= bound * 1.001 + 1e-5).all()


def test_every_type_has_a_kernel_and_the_tier_follows_the_cpu():
    table = cpu.kernel_table()
    for qtype in LEGACY + FLOATS:
        assert int(qtype) in table, qtype.name
    flags = open("/proc/cpuinfo").read().split()
    if "avx2" in flags and "fma" in flags and not os.environ.get("MOESTREAM_KERNEL_TIER"):
        # the tier must follow the CPU, not a default; AVX-512 VNNI adds Q4_0 and Q8_0 (test_avx512.py)
        vnni = all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"))
        want = {q.name: "avx512" if vnni and q in (Q.Q4_0, Q.Q8_0) else "avx2" for q in LEGACY + FLOATS}
        assert {q.name: table[int(q)][0] for q in LEGACY + FLOATS} == want


GENERIC_CHECK = """
import torch
from gguf import GGMLQuantizationType as Q
from moestream.kernels import cpu, reference
from tests.kernels.test_kernels import quantized_weight, activations
assert {tier for tier, _ in cpu.kernel_table().values()} == {"generic"}
for q in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.MXFP4, Q.F16, Q.BF16, Q.F32):
    w, x = quantized_weight(q, 17, 96), activations(3, 96)
    out, ref = cpu.matmul(x, w, 2), reference.matmul_act_quantized(x, w)
    assert ((out - ref).abs() <= 1e-5 * (x.abs() @ w.dense().abs().T) + 1e-6).all(), q.name
print("generic ok")
"""


def test_generic_tier_matches_reference():
    env = dict(os.environ, MOESTREAM_KERNEL_TIER="generic")
    result = subprocess.run([sys.executable, "-c", GENERIC_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "generic ok" in result.stdout, result.stderr


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q8_0, Q.Q5_1, Q.MXFP4], ids=lambda q: q.name)
@pytest.mark.parametrize("t", [1, 3, 17])
def test_fused_moe_matches_reference(qtype, t):
    d, f, n_experts, k = 64, 96, 8, 2
    experts = [ExpertWeights(quantized_weight(qtype, f, d, 3 * e), quantized_weight(qtype, f, d, 3 * e + 1),
                             quantized_weight(qtype, d, f, 3 * e + 2)) for e in range(n_experts)]
    x = activations(t, d)
    logits = torch.randn(t, n_experts, generator=torch.Generator().manual_seed(t))
    topw, topi = torch.softmax(logits, -1).topk(k, -1)
    ids, offsets, pairs = group_by_expert(topi)
    rows, weights = pairs // k, topw.flatten()[pairs]
    selected = [experts[e] for e in ids]
    native = cpu.moe_ffn(x, selected, offsets, rows, weights, n_threads=2)
    spans = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
    args = (x, selected, [rows[s].long() for s in spans], [weights[s] for s in spans])
    same_rounding = reference.moe_ffn(*args, act_quantized=True)
    torch.testing.assert_close(native, same_rounding, rtol=1e-4, atol=1e-4 * same_rounding.abs().max().item())
    exact = reference.moe_ffn(*args)
    assert (native - exact).abs().max() <= 0.02 * exact.abs().max()  # activation rounding only


def test_compute_rejects_bad_thread_counts():
    from moestream.errors import ConfigError

    with pytest.raises(ConfigError):
        Compute(threads=0)


@pytest.mark.parametrize("qtype", [Q.MXFP4, Q.Q4_0, Q.Q8_0], ids=lambda q: q.name)
def test_eight_row_kernel_gives_the_one_row_kernels_bits(qtype):
    """rows_dot takes 8 rows at a time where a type has an 8-row kernel, the rest one by one: a row's output must
    not depend on which of the two computed it (a matrix split differently over tasks would change the logits)."""
    w, x = quantized_weight(qtype, 19, 128, seed=4), activations(3, 128, seed=2)
    whole = cpu.matmul(x, w, n_threads=2)
    for r in range(19):
        row = QuantWeight(w.raw[r:r + 1].contiguous(), qtype, (1, 128))
        assert torch.equal(cpu.matmul(x, row, n_threads=1)[:, 0], whole[:, r]), r
