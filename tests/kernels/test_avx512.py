"""The AVX-512 VNNI tier (csrc/dot_avx512.c): chosen by run-time detection only, and bit-identical to the AVX2 tier
(whose results are in turn checked against the reference in test_kernels.py and test_packed.py).

Where the CPU has AVX-512 VNNI, this process runs that tier and a subprocess capped at MOESTREAM_KERNEL_TIER=avx2
computes the same products; the two must agree bit for bit, for the GGUF layout (8-row dots) and the packed
layout (one and many tokens), and through the fused expert FFN. Where the CPU lacks it, the table must not offer
it (the comparison is then skipped, with that reason: there is nothing to compare). Special values (NaN, inf,
subnormals, huge) through the packed layout, and two threads calling at once, give what a lone call on the GGUF
layout gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.kernels import cpu
from tests.kernels.test_kernels import activations, quantized_weight

VNNI_TYPES = [Q.Q4_0, Q.Q8_0]
PACKED_BASE = 64


def cpu_has_avx512_vnni() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return all(f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"))


PRODUCTS = """
import sys, torch
from gguf import GGMLQuantizationType as Q
from moestream.formats.weight import ExpertWeights
from moestream.kernels import cpu
from tests.kernels.test_kernels import activations, quantized_weight
from moestream.layers.experts import group_by_expert
from tests.kernels.test_kernels import activations, quantized_weight

out = {"table": cpu.kernel_table()}
for q in (Q.Q4_0, Q.Q8_0):
    for n, k, t in ((8, 32, 1), (24, 96, 1), (17, 256, 3), (16, 512, 2), (40, 1024, 17)):
        w, x = quantized_weight(q, n, k, seed=n + k), activations(t, k, seed=t)
        out[f"{q.name}-{n}-{k}-{t}"] = cpu.matmul(x, w, 2)
        if n % 8 == 0:
            out[f"{q.name}-{n}-{k}-{t}-packed"] = cpu.matmul(x, cpu.pack(w, 2), 2)
    d, f, n_experts, top = 64, 96, 8, 2
    experts = [ExpertWeights(*(quantized_weight(q, *shape, 3 * e + i) for i, shape in enumerate(((f, d), (f, d), (d, f)))))
               for e in range(n_experts)]
    x = activations(5, d)
    topw, topi = torch.softmax(torch.randn(5, n_experts, generator=torch.Generator().manual_seed(5)), -1).topk(top, -1)
    ids, offsets, pairs = group_by_expert(topi)
    out[f"{q.name}-moe"] = cpu.moe_ffn(x, [experts[e] for e in ids], offsets, pairs // top, topw.flatten()[pairs],
                                       n_threads=2)
torch.save(out, sys.argv[1])
"""


def products(tmp_path: Path, tier: str | None) -> dict:
    """The products above, computed in a fresh process (the tier is fixed when the extension loads)."""
    env = dict(os.environ)
    env.pop("MOESTREAM_KERNEL_TIER", None)
    if tier:
        env["MOESTREAM_KERNEL_TIER"] = tier
    path = tmp_path / f"products-{tier or 'best'}.pt"
    run = subprocess.run([sys.executable, "-c", PRODUCTS, str(path)], env=env, capture_output=True, text=True,
                         timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(path)


def test_the_tier_follows_the_cpu():
    table = cpu.kernel_table()
    if os.environ.get("MOESTREAM_KERNEL_TIER"):
        pytest.skip("a tier is forced by the environment")
    want = "avx512" if cpu_has_avx512_vnni() else "avx2"
    for q in VNNI_TYPES:
        assert table[int(q)][0] == want, q.name
        assert table[int(q) + PACKED_BASE][0] == want, f"{q.name} packed"
    assert table[int(Q.Q4_K)][0] == "avx2"  # the tier covers what it implements, nothing more


@pytest.mark.skipif(not cpu_has_avx512_vnni(), reason="this CPU has no AVX-512 VNNI: no tier to compare")
def test_avx512_tier_is_bit_identical_to_avx2(tmp_path):
    best, avx2 = products(tmp_path, None), products(tmp_path, "avx2")
    assert {best["table"][int(q)][0] for q in VNNI_TYPES} == {"avx512"}
    assert {avx2["table"][int(q)][0] for q in VNNI_TYPES} == {"avx2"}
    keys = [k for k in best if k != "table"]
    assert len(keys) == 2 * (5 + 4 + 1)  # per type: 5 shapes, 4 of them packed too, the expert FFN
    for key in keys:
        assert not best[key].isnan().any(), key
        assert torch.equal(best[key], avx2[key]), f"{key}: max difference {float((best[key] - avx2[key]).abs().max())}"


def test_a_cap_below_the_cpu_is_obeyed(tmp_path):
    env = {**os.environ, "MOESTREAM_KERNEL_TIER": "avx2"}
    code = "from moestream.kernels import cpu; print(' '.join(sorted({t for t, _ in cpu.kernel_table().values()})))"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "avx512" not in run.stdout.split() and run.stdout.split(), run.stdout


@pytest.mark.parametrize("qtype", VNNI_TYPES, ids=lambda q: q.name)
def test_special_values_through_the_packed_layout_match_the_gguf_layout(qtype):
    """Zeros, subnormals, +-inf, NaN and huge activations (test_special_values.py's rows) through the packed
    gemv8 (one and two tokens at a time) give exactly the 8-row dots' outputs, NaN where they have NaN."""
    from tests.kernels.test_special_values import K, special_x

    x, w = special_x(), quantized_weight(qtype, 16, K, seed=int(qtype))
    plain = cpu.matmul(x, w, 2, out=torch.full((x.shape[0], 16), 12345.0))
    packed = cpu.pack(w, 2)
    for rows in (slice(0, 9), slice(4, 5), slice(5, 7)):  # all, one token, a pair
        got = cpu.matmul(x[rows].contiguous(), packed, 2, out=torch.full((len(range(9)[rows]), 16), 12345.0))
        want = plain[rows]
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~got.isnan()], want[~want.isnan()])


def test_concurrent_callers_get_their_own_results():
    """Two Python threads (the GIL released in native code) calling the tier's kernels at once, on both layouts,
    each get exactly what a lone call gives: the kernels keep no state between calls."""
    import threading

    cases = []
    for q in VNNI_TYPES:
        w, x = quantized_weight(q, 64, 1024, seed=int(q)), activations(5, 1024, seed=int(q))
        for weight_ in (w, cpu.pack(w, 2)):
            cases.append((x, weight_, cpu.matmul(x, weight_, 2)))
    failures = []

    def hammer(offset: int) -> None:
        for i in range(40):
            x, w, want = cases[(i + offset) % len(cases)]
            if not torch.equal(cpu.matmul(x, w, 2), want):
                failures.append((offset, i))

    threads = [threading.Thread(target=hammer, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
