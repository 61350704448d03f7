"""Streaming is invisible in the output: with a budget that forces misses at every step, logits are bit-identical
to the run that reads every expert through the memory map, for every architecture, both layouts and both readers."""

from __future__ import annotations

import pytest
import torch

from moestream.store import uring
from tests.cache.streaming_helpers import run, tight_budget
from tests.fixtures.gguf_edit import copy_gguf, split_experts
from tests.fixtures.tiny_models import MOE_ARCHS, gguf_path

READERS = ["thread", "uring"]


def assert_identical(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(got) == len(ref)
    for step, (a, b) in enumerate(zip(got, ref)):
        assert torch.equal(a, b), f"step {step}: max |diff| {(a - b).abs().max().item()}"


def test_uring_reader_is_built():
    assert uring.available(), "the io_uring extension did not build (moestream/store/csrc/uring.c)"


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_tight_budget_is_bit_identical_to_memory_map(arch, reader):
    path = gguf_path(arch, "q8_0")
    ref, _ = run(path, mmap=True)
    # small chunks and a shallow queue: many partial reads per expert, completing out of order
    got, cache = run(path, ram_budget=tight_budget(path), reader=reader, chunk_bytes=8192, depth=3)
    assert_identical(got, ref)
    s = cache.stats
    assert s.hits == 0 and s.misses == s.lookups > 0, "the budget should force a miss at every lookup"
    assert cache.pool.allocated_bytes <= cache.pool.budget


@pytest.mark.parametrize("arch", ["mixtral", "qwen2moe"])
def test_layer_policy_streams_bit_identically(arch):
    path = gguf_path(arch, "q8_0")
    ref, _ = run(path, mmap=True)
    got, cache = run(path, ram_budget=3 * tight_budget(path) // 2, policy="layer", chunk_bytes=8192)
    assert_identical(got, ref)
    assert cache.policy.name == "layer" and cache.stats.evictions > 0


@pytest.mark.parametrize("arch", ["mixtral", "qwen3moe"])
def test_roomy_budget_and_f32_weights_are_bit_identical(arch):
    path = gguf_path(arch, "f32")
    ref, _ = run(path, mmap=True)
    got, cache = run(path)  # automatic budget: every expert fits, later steps hit
    assert_identical(got, ref)
    assert cache.stats.hits > 0 and cache.stats.evictions == 0


def test_per_expert_layout_streams_identically(tmp_path):
    merged = gguf_path("qwen2moe", "q8_0")
    split = copy_gguf(merged, tmp_path / "split.gguf", edit_tensors=split_experts)
    ref, _ = run(merged, mmap=True)
    got, cache = run(split, ram_budget=tight_budget(split))
    assert_identical(got, ref)
    assert cache.layout.store.layout == "per-expert"
