"""The packed 8-row layout (formats/packed.py, csrc/packed.c): native packing equals the PyTorch reference byte for
byte, unpacking undoes it, and every product over packed bytes is bit-identical to the same product over the GGUF
bytes (row kernel, 8-row kernel, fused MoE, both tiers), so packing an expert in the cache between two steps cannot
change an output. Outputs start as NaN, so an unwritten element fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from moestream.errors import KernelInputError
from moestream.formats import packed
from moestream.formats.weight import ExpertWeights, QuantWeight
from moestream.kernels import cpu, reference
from moestream.layers.experts import group_by_expert
from tests.kernels.test_kernels import activations, poisoned, quantized_weight

PACKABLE = [Q.Q4_0, Q.Q8_0]
SHAPES = [(8, 32), (24, 96), (64, 256), (40, 4096)]


def one_row(w: QuantWeight, i: int) -> QuantWeight:
    return QuantWeight(w.raw[i:i + 1].contiguous(), w.qtype, (1, w.shape[1]))


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
@pytest.mark.parametrize("n,k", SHAPES)
def test_native_packing_is_the_reference_layout_and_unpacks(qtype, n, k):
    w = quantized_weight(qtype, n, k, seed=n + k)
    copy = cpu.pack(w, n_threads=2)
    assert copy.packed and copy.raw.data_ptr() != w.raw.data_ptr()
    assert torch.equal(copy.raw, packed.pack(w.raw, qtype, w.shape))
    assert torch.equal(packed.unpack(copy.raw, qtype, w.shape), w.raw)
    assert torch.equal(copy.dense(), w.dense()) and torch.equal(copy.gguf_bytes(), w.raw)
    index = torch.tensor([n - 1, 0, 3])
    assert torch.equal(copy.rows(index), w.rows(index))
    in_place = cpu.pack(QuantWeight(w.raw.clone(), qtype, w.shape), n_threads=2, in_place=True)
    assert torch.equal(in_place.raw, copy.raw)


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("t", [1, 3, 17])
def test_packed_matmul_is_bit_identical_to_gguf_rows(qtype, n, k, t):
    w, x = quantized_weight(qtype, n, k, seed=t), activations(t, k)
    plain = cpu.matmul(x, w, n_threads=2, out=poisoned(t, n))  # the 8-row kernel on GGUF rows
    fast = cpu.matmul(x, cpu.pack(w, 2), n_threads=2, out=poisoned(t, n))
    by_row = torch.cat([cpu.matmul(x, one_row(w, i), 1) for i in range(n)], dim=1)  # the one-row kernel
    assert not fast.isnan().any()
    assert torch.equal(fast, plain) and torch.equal(plain, by_row)
    same_rounding = reference.matmul_act_quantized(x, w)  # and all of them are the product they claim to be
    assert ((fast - same_rounding).abs() <= 1e-5 * (x.abs() @ w.dense().abs().T) + 1e-6).all()


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
@pytest.mark.parametrize("t", [1, 5])
def test_fused_moe_with_packed_experts_is_bit_identical(qtype, t):
    d, f, n_experts, k = 64, 96, 6, 2
    experts = [ExpertWeights(*(quantized_weight(qtype, *shape, seed=3 * e + j)
                               for j, shape in enumerate(((f, d), (f, d), (d, f))))) for e in range(n_experts)]
    x = activations(t, d)
    topw, topi = torch.softmax(torch.randn(t, n_experts, generator=torch.Generator().manual_seed(t)), -1).topk(k, -1)
    ids, offsets, pairs = group_by_expert(topi)
    rows, weights = pairs // k, topw.flatten()[pairs]
    plain = cpu.moe_ffn(x, [experts[e] for e in ids], offsets, rows, weights, n_threads=2)
    packed_experts = [ExpertWeights(*(cpu.pack(m, 2) for m in experts[e])) for e in ids]
    assert torch.equal(cpu.moe_ffn(x, packed_experts, offsets, rows, weights, n_threads=2), plain)


def test_what_does_not_pack_is_refused_or_left_alone():
    odd_rows = quantized_weight(Q.Q4_0, 12, 64)
    assert not cpu.can_pack(odd_rows) and not cpu.can_pack(quantized_weight(Q.Q4_1, 16, 64))
    with pytest.raises(KernelInputError, match="cannot be packed"):
        cpu.pack(odd_rows, 2)
    already = cpu.pack(quantized_weight(Q.Q8_0, 16, 64), 2)
    with pytest.raises(KernelInputError, match="cannot be packed"):
        cpu.pack(already, 2)
    lying = QuantWeight(odd_rows.raw, Q.Q4_0, (12, 64), packed=True)  # claims a layout 12 rows cannot have
    with pytest.raises(KernelInputError, match="multiples of 8"):
        cpu.matmul(activations(1, 64), lying, 2)
    with pytest.raises(ValueError):  # and C refuses it too, whoever calls
        cpu._native.matmul(int(Q.Q4_0) + cpu.PACKED_BASE, odd_rows.raw.data_ptr(), 12, 64,
                           activations(1, 64).data_ptr(), 1, poisoned(1, 12).data_ptr(), 1)
    w = quantized_weight(Q.Q4_0, 16, 64)
    buf = torch.zeros(w.nbytes + 18, dtype=torch.uint8)
    buf[:w.nbytes] = w.raw.flatten()
    with pytest.raises(ValueError):  # source and destination overlapping by part: neither a copy nor in place
        cpu._native.pack_rows8(int(Q.Q4_0), buf.data_ptr(), buf.data_ptr() + 18, 16, 64, 1)


def test_compute_prepare_packs_only_when_asked():
    from moestream.kernels.dispatch import Compute

    w = quantized_weight(Q.Q4_0, 16, 64)
    assert Compute(threads=2).prepare(w) is w
    p = Compute(threads=2, repack=True).prepare(w)
    assert p.packed and torch.equal(p.gguf_bytes(), w.raw)
    mapped = QuantWeight(w.raw.numpy(), w.qtype, w.shape)  # bytes left in a memory map stay as the file has them
    assert Compute(threads=2, repack=True).prepare(mapped) is mapped


GENERIC_CHECK = """
import torch
from gguf import GGMLQuantizationType as Q
from moestream.kernels import cpu, reference
from tests.kernels.test_kernels import quantized_weight, activations
assert {tier for tier, _ in cpu.kernel_table().values()} == {"generic"}
for q in (Q.Q4_0, Q.Q8_0):
    w, x = quantized_weight(q, 24, 96), activations(3, 96)
    plain, fast = cpu.matmul(x, w, 2), cpu.matmul(x, cpu.pack(w, 2), 2)
    assert torch.equal(plain, fast), q.name
    assert ((fast - reference.matmul_act_quantized(x, w)).abs() <= 1e-5 * (x.abs() @ w.dense().abs().T) + 1e-6).all()
print("generic ok")
"""


def test_generic_tier_packed_kernels_are_bit_identical_too():
    env = dict(os.environ, MOESTREAM_KERNEL_TIER="generic")
    result = subprocess.run([sys.executable, "-c", GENERIC_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "generic ok" in result.stdout, result.stderr


def test_pack_entry_point_refuses_hostile_sizes_and_types():
    w = quantized_weight(Q.Q4_0, 16, 64)
    src, dst = w.raw.data_ptr(), torch.empty_like(w.raw).data_ptr()
    for type_, rows, cols in ((int(Q.Q4_0), 0, 64), (int(Q.Q4_0), -8, 64), (int(Q.Q4_0), 16, 0),
                              (int(Q.Q4_0), 16, 48), (int(Q.Q4_0), 12, 64), (int(Q.Q4_K), 16, 256), (-1, 16, 64),
                              (999, 16, 64)):
        with pytest.raises(ValueError):
            cpu._native.pack_rows8(type_, src, dst, rows, cols, 2)
    with pytest.raises(ValueError):
        cpu._native.pack_rows8(int(Q.Q4_0), 0, dst, 16, 64, 2)  # a null address
    assert torch.equal(w.raw, quantized_weight(Q.Q4_0, 16, 64).raw)  # refused calls wrote nothing


def test_packing_from_several_threads_at_once_gives_the_reference_bytes():
    import threading

    weights = [quantized_weight(q, 256, 512, seed=s) for s in range(4) for q in PACKABLE]
    out: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        for _ in range(5):
            out[i] = cpu.pack(QuantWeight(weights[i].raw.clone(), weights[i].qtype, weights[i].shape), 2,
                              in_place=i % 2 == 0).raw

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(weights))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(weights):
        assert torch.equal(out[i], packed.pack(w.raw, w.qtype, w.shape)), i
