"""The native attention step (kernels/cpu/attention.py) against the PyTorch path it replaces (`x + Attention(
RMSNorm(x))` of layers/attention.py), on random layers: T = 1, 3, 16 rows per segment, GQA ratios 1, 2, 4 and H,
odd head counts, head_dim 24/64/128, both RoPE layouts and partial RoPE, per-head and full Q/K norm, with and
without bias, positions up to the context length through caches that grow, and two or three segments per call.

Poisoning: the output and every cache row from the segment's first new row on are NaN before the call, so an output
or a new key the step did not write, or a key it read past what the token may see, fails the comparison. F32
weights agree to 1e-5 of the largest attention output (summation order only); quantized weights to activation
rounding (x is normalised in C, so an int8 code may round the other way)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.engine.kv_cache import KVCache
from moestream.errors import ConfigError, KernelInputError
from moestream.formats.weight import QuantWeight
from moestream.kernels.cpu import attention as native
from moestream.kernels.dispatch import Compute
from moestream.layers.attention import Attention, AttentionWeights, Segment
from moestream.layers.attention_step import NativeAttentionStep
from moestream.layers.linear import QuantLinear
from moestream.layers.norm import RMSNorm
from moestream.layers.rope import Rope
from tests.kernels.test_kquant_kernels import FP16_FIELDS, _weight as kquant_weight

NAN = float("nan")
D = 96


def weight(rows: int, cols: int, qtype: Q, gen: torch.Generator) -> QuantWeight:
    """Random weights of about unit gain; K-quants (which gguf cannot quantize) as random blocks of small scale."""
    if qtype in FP16_FIELDS:
        w = kquant_weight(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))), qtype, rows, cols)
        raw = w.raw.view(rows * (cols // 256), -1)
        for off in FP16_FIELDS[qtype]:  # fp16 scales of about 1 / (63 * 15 * sqrt(cols)) (6-bit scales, 4-bit codes)
            raw[:, off:off + 2] = torch.full((raw.shape[0],), 1e-3 / cols**0.5, dtype=torch.float16).view(
                torch.uint8).view(-1, 2)
        return w
    data = (torch.randn(rows, cols, generator=gen) / cols**0.5).numpy()
    raw = gguf.quants.quantize(data, qtype)
    raw = raw.view(np.uint8) if raw.dtype != np.uint8 else raw
    return QuantWeight(torch.from_numpy(np.ascontiguousarray(raw)), qtype, (rows, cols))


def vector(n: int, gen: torch.Generator, mean: float = 0.0, std: float = 0.1) -> torch.Tensor:
    return mean + std * torch.randn(n, generator=gen)


def layer(h: int, kvh: int, dh: int, rope: str = "neox", qk_norm: str | None = None, bias: bool = False,
          qtype: Q = Q.F32, rope_dim: int | None = None, d: int = D, seed: int = 0):
    """(attn_norm, Attention) with random weights; the Attention's layer index is 0."""
    g = torch.Generator().manual_seed(seed)
    nq, nkv = h * dh, kvh * dh
    lin = lambda rows, cols, b: QuantLinear(weight(rows, cols, qtype, g), vector(rows, g) if b else None)
    w = AttentionWeights(lin(nq, d, bias), lin(nkv, d, bias), lin(nkv, d, bias), lin(d, nq, False))
    if qk_norm:
        per_head = qk_norm == "head"
        w.q_norm = RMSNorm(vector(dh if per_head else nq, g, 1.0), 1e-6)
        w.k_norm = RMSNorm(vector(dh if per_head else nkv, g, 1.0), 1e-5)
        w.qk_norm_per_head = per_head
    norm = RMSNorm(vector(d, g, 1.0), 1e-5)
    return norm, Attention(0, w, h, kvh, dh, Rope(rope_dim or dh, 10000.0, rope))


def cache(attn: Attention, n_cached: int, max_len: int = 512, initial: int = 256, seed: int = 1) -> KVCache:
    """A cache holding n_cached random keys and values; the rows after them are NaN."""
    kv = KVCache(1, attn.n_kv_heads, attn.head_dim, max_len, initial)
    g = torch.Generator().manual_seed(seed)
    kv.reserve(0, n_cached)
    for buf in (kv.k[0], kv.v[0]):
        buf.fill_(NAN)
        buf[:, :n_cached] = torch.randn(attn.n_kv_heads, n_cached, attn.head_dim, generator=g)
    kv.commit(0, n_cached)
    return kv


def segments(lengths: list[int], caches: list[KVCache]) -> list[Segment]:
    out, start = [], 0
    for n, kv in zip(lengths, caches):
        out.append(Segment(start, n, torch.arange(kv.length, kv.length + n), kv))
        start += n
    return out


def native_step(kernel: native.AttnLayer, x: torch.Tensor, segs: list[Segment], threads: int = 2) -> torch.Tensor:
    """As NativeAttentionStep does, with the output and every cache row from the first new one on poisoned."""
    parts = []
    for s in segs:
        k, v, n = s.kv.reserve(0, s.length)
        k[:, n:], v[:, n:] = NAN, NAN
        parts.append((k, v, n, s.start, s.length, s.positions))
    out = native.attn_step(kernel, x, parts, threads, out=torch.full_like(x, NAN))
    for s in segs:
        s.kv.commit(0, s.length)
    return out


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    assert not got.isnan().any(), "some outputs were not written"
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * want.abs().max().item())


def compare(norm, attn, lengths, cached, threads=2, rel=1e-5, seed=2, kv_args=None):
    """Native step vs PyTorch path on the same input and (copied) caches: outputs, then the new keys/values."""
    caches = [cache(attn, n, seed=seed + i, **(kv_args or {})) for i, n in enumerate(cached)]
    ref_caches = copy.deepcopy(caches)
    x = torch.randn(sum(lengths), norm.weight.numel(), generator=torch.Generator().manual_seed(seed))
    kernel = NativeAttentionStep.build(norm, attn, Compute(threads)).kernel
    got = native_step(kernel, x, segments(lengths, caches), threads)
    want = x + attn(norm(x), segments(lengths, ref_caches))
    close(got - x, want - x, rel)
    for kv, ref in zip(caches, ref_caches):
        n = ref.length
        assert kv.length == n
        close(kv.k[0][:, :n], ref.k[0][:, :n], rel)
        close(kv.v[0][:, :n], ref.v[0][:, :n], rel)
    return caches, ref_caches


GQA = [(4, 4), (4, 2), (8, 2), (5, 1), (3, 3), (6, 2)]  # (H, KVH): ratios 1, 2, 4, H; odd head counts


@pytest.mark.parametrize("t", [1, 3, 16])
@pytest.mark.parametrize("h,kvh", GQA, ids=[f"{h}x{kvh}" for h, kvh in GQA])
@pytest.mark.parametrize("rope", ["norm", "neox"])
def test_matches_torch_path(t, h, kvh, rope):
    norm, attn = layer(h, kvh, 24, rope, seed=h * 10 + kvh)
    compare(norm, attn, [t], [37])


@pytest.mark.parametrize("dh", [24, 64, 128])
@pytest.mark.parametrize("qk_norm", [None, "head", "full"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_head_dims_norms_and_bias(dh, qk_norm, bias):
    norm, attn = layer(4, 2, dh, "neox", qk_norm, bias, seed=dh)
    compare(norm, attn, [3], [150])  # > 128 keys: more than one softmax block


@pytest.mark.parametrize("rope", ["norm", "neox"])
def test_partial_rope(rope):
    norm, attn = layer(4, 2, 64, rope, rope_dim=32)
    compare(norm, attn, [1, 3], [5, 20])


@pytest.mark.parametrize("threads", [1, 2])
def test_segments_of_several_sequences(threads):
    norm, attn = layer(8, 2, 64, "norm", "head", True)
    compare(norm, attn, [1, 16, 3], [0, 40, 300], threads)  # the first sequence starts empty


def test_positions_up_to_the_context_through_a_growing_cache():
    """Steps of 1, 3 and 16 tokens from an empty cache (capacity 4) until the 64-token context is full."""
    norm, attn = layer(5, 5, 24, "norm", "full", True)
    max_len, kv_args = 64, dict(max_len=64, initial=4)
    caches, refs = [cache(attn, 0, **kv_args)], [cache(attn, 0, **kv_args)]
    kernel = NativeAttentionStep.build(norm, attn, Compute(2)).kernel
    steps, gen = [1, 3, 16, 1, 16, 3, 16, 1, 3, 1, 3], torch.Generator().manual_seed(5)
    assert sum(steps) == max_len
    for t in steps:
        x = torch.randn(t, D, generator=gen)
        got = native_step(kernel, x, segments([t], caches))
        close(got - x, attn(norm(x), segments([t], refs)))
    assert caches[0].length == max_len and caches[0].k[0].shape[1] == max_len
    close(caches[0].k[0], refs[0].k[0])
    with pytest.raises(ConfigError, match="context length 64 exceeded"):
        caches[0].reserve(0, 1)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_K], ids=lambda q: q.name)
def test_quantized_weights(qtype):
    d = 256 if qtype == Q.Q4_K else D  # K-quants take rows of 256
    norm, attn = layer(8, 2, 32, "neox", qtype=qtype, d=d)
    compare(norm, attn, [1, 3], [10, 64], rel=2e-3)


def test_mixed_activation_formats():
    """Q4_K q (256-blocks) with Q8_0 k, v and o (32-blocks): x is quantized once per format."""
    norm, attn = layer(8, 2, 32, "neox", d=256, qtype=Q.Q8_0)
    g = torch.Generator().manual_seed(9)
    attn.w.q = QuantLinear(weight(256, 256, Q.Q4_K, g))
    compare(norm, attn, [2], [30], rel=2e-3)


GENERIC_CHECK = """
from moestream.kernels import cpu
assert {tier for tier, _ in cpu.kernel_table().values()} == {"generic"}
from tests.kernels.test_attention_step import layer, compare
for h, kvh, dh in ((4, 2, 64), (5, 1, 24)):
    norm, attn = layer(h, kvh, dh, "norm", "head", True)
    compare(norm, attn, [1, 3], [20, 150])
print("generic ok")
"""


def test_generic_tier_matches_torch_path():
    env = dict(os.environ, MOESTREAM_KERNEL_TIER="generic")
    result = subprocess.run([sys.executable, "-c", GENERIC_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "generic ok" in result.stdout, result.stderr


# ---- when the native step runs -----------------------------------------------------------------------------


def test_block_takes_native_step_for_short_segments_only(monkeypatch):
    norm, attn = layer(4, 2, 24)
    step = NativeAttentionStep.build(norm, attn, Compute(2))
    kv = cache(attn, 3)
    assert step.accepts(segments([16], [kv])) and step.accepts(segments([1, 16], [kv, cache(attn, 0)]))
    assert not step.accepts(segments([17], [kv]))
    assert not step.accepts([Segment(0, 1, torch.arange(3, 4), object())])  # a cache without reserve/commit
    monkeypatch.setenv("MOESTREAM_NO_NATIVE_STEP", "1")
    assert not step.accepts(segments([1], [kv]))


def test_unsupported_projection_keeps_torch_path():
    norm, attn = layer(4, 2, 24)
    attn.w.q = QuantLinear(QuantWeight(attn.w.q.weight.raw, Q.IQ2_XXS, attn.w.q.weight.shape))
    assert NativeAttentionStep.build(norm, attn, Compute(2)) is None


def test_layer_the_kernel_refuses_keeps_torch_path():
    norm, attn = layer(4, 2, 24)
    assert NativeAttentionStep.build(RMSNorm(norm.weight[None], norm.eps), attn, Compute(2)) is None  # [1, D]


def test_call_commits_the_new_rows():
    norm, attn = layer(4, 2, 24)
    step = NativeAttentionStep.build(norm, attn, Compute(2))
    kv, ref = cache(attn, 7), cache(attn, 7)
    x = torch.randn(2, D)
    close(step(x, segments([2], [kv])) - x, attn(norm(x), segments([2], [ref])))
    assert kv.length == 9


# ---- refused inputs ----------------------------------------------------------------------------------------


def parts_for(attn, lengths, cached):
    caches = [cache(attn, n, seed=i) for i, n in enumerate(cached)]
    out, start = [], 0
    for n, kv in zip(lengths, caches):
        k, v, c = kv.reserve(0, n)
        out.append((k, v, c, start, n, torch.arange(c, c + n)))
        start += n
    return out


def replace(part: tuple, i: int, value) -> tuple:
    return part[:i] + (value,) + part[i + 1:]


def bad_segments(attn):
    p = parts_for(attn, [2], [5])[0]
    two = parts_for(attn, [1, 1], [5, 5])
    k, v = p[0], p[1]
    return [  # (case, segments, rows of x, words of the error)
        ("k-dtype", [replace(p, 0, k.double())], 2, "contiguous float32 CPU tensors of shape [2, capacity, 24]"),
        ("k-heads", [replace(p, 0, k[:1].contiguous())], 2, "of shape [2, capacity, 24]"),
        ("v-shape", [replace(p, 1, v[:, :-1].contiguous())], 2, "of shape [2, capacity, 24]"),
        ("k-strided", [replace(p, 0, k.transpose(0, 1).contiguous().transpose(0, 1))], 2, "contiguous float32"),
        ("pos-dtype", [replace(p, 5, p[5].int())], 2, "positions must be a contiguous int64"),
        ("pos-len", [replace(p, 5, p[5][:1])], 2, "the segment's 2 rows"),
        ("pos-negative", [replace(p, 5, torch.tensor([-1, 0]))], 2, "positions >= 0"),
        ("too-long", parts_for(attn, [17], [0]), 17, "1..16 rows each"),
        ("rows", [p], 3, "cover x's rows in order"),
        ("start", [replace(p, 3, 1)], 2, "cover x's rows in order"),
        ("order", [two[1], two[0]], 2, "cover x's rows in order"),
        ("no-room", [replace(p, 2, k.shape[1] - 1)], 2, "fit their caches"),
        ("negative-cached", [replace(p, 2, -1)], 2, "fit their caches"),
        ("same-cache", [two[0], replace(two[1], 0, two[0][0])], 2, "no cache twice"),
        ("k-is-v", [replace(p, 1, p[0])], 2, "no cache twice"),
        ("none", [], 2, "cover x's rows"),
        ("huge", [replace(p, 2, 2**40)], 2, "rows and segments"),
    ]


SMALL_NORM, SMALL_ATTN = layer(4, 2, 24)
SMALL = NativeAttentionStep.build(SMALL_NORM, SMALL_ATTN, Compute(2)).kernel
BAD_SEGMENTS = bad_segments(SMALL_ATTN)


@pytest.mark.parametrize("case,segs,rows,needle", BAD_SEGMENTS, ids=[c[0] for c in BAD_SEGMENTS])
def test_refuses_bad_segments(case, segs, rows, needle):
    with pytest.raises(KernelInputError, match=re.escape(needle)):
        native.attn_step(SMALL, torch.randn(rows, D), segs, 2)


def test_refuses_bad_x_and_out():
    kernel, attn = SMALL, SMALL_ATTN
    segs = parts_for(attn, [2], [5])
    with pytest.raises(KernelInputError, match=re.escape("x is [2, 64], the weight takes rows of 96 columns")):
        native.attn_step(kernel, torch.randn(2, 64), segs, 2)
    with pytest.raises(KernelInputError, match="out must be a contiguous float32 CPU tensor of shape"):
        native.attn_step(kernel, torch.randn(2, D), segs, 2, out=torch.empty(2, D, dtype=torch.float64))
    got = native.attn_step(kernel, torch.randn(2, D, dtype=torch.float64), parts_for(attn, [2], [5]), 2)
    assert got.dtype == torch.float32 and not got.isnan().any()  # other float dtypes are converted


def test_refuses_inconsistent_layers():
    norm, attn = layer(4, 2, 24, "neox", "head")
    spec = NativeAttentionStep.build(norm, attn, Compute(2)).kernel.spec
    cases = [
        (dict(n_heads=3), "attn_q (F32 [96, 96]): expected [72, 96]"),
        (dict(norm=torch.ones(95)), "attn_norm must be a 1-D CPU tensor of 96 features"),
        (dict(q_norm=None), "q_norm: a weight of 24 features is needed"),
        (dict(k_norm=torch.ones(48)), "k_norm must be a 1-D CPU tensor of 24 features"),
        (dict(biases=(torch.ones(5), None, None)), "attn_q bias must be a 1-D CPU tensor of 96 features"),
        (dict(qk_norm="rows"), "qk_norm must be None, 'head' or 'full'"),
        (dict(inv_freq=torch.ones(13)), "RoPE over 26 features"),
    ]
    for change, needle in cases:
        bad = native.AttnSpec(**{**spec.__dict__, **change})
        with pytest.raises(KernelInputError, match=re.escape(needle)):
            native.AttnLayer(bad)
