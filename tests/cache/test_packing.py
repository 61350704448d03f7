"""--repack: resident weights and cached experts rewritten into the 8-row packed layout change no output (the packed
kernels are bit-identical to the GGUF-order ones), whether every expert is packed as it lands ("read"), only once it
is hot ("hot": a batch then mixes packed and GGUF-order experts), or never; re-reads are still verified against the
file's bytes, not the packed ones."""

from __future__ import annotations

import pytest
import torch

from moestream.cache.expert_cache import REPACK_AFTER
from moestream.engine.loader import load_model
from moestream.cache.config import CacheConfig
from tests.cache.streaming_helpers import greedy_logits, run, slot_size, tight_budget
from tests.cache.test_streaming import assert_identical
from tests.fixtures.tiny_models import MOE_ARCHS, gguf_path


def packed_resident(lm) -> list[bool]:
    block = lm.model.blocks[0]
    return [lin.weight.packed for lin in (block.attn.w.q, block.attn.w.o)] + [lm.model.lm_head.weight.packed]


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_repack_modes_are_bit_identical_to_the_memory_map(arch):
    path = gguf_path(arch, "q8_0")
    ref, _ = run(path, mmap=True, repack="off")
    packed_all, cache = run(path, repack="on")
    assert_identical(packed_all, ref)
    assert cache.pack_mode == "read" and cache.stats.packed_experts == cache.stats.misses > 0
    auto, cache = run(path)  # every expert fits: auto packs as they land
    assert_identical(auto, ref)
    assert cache.pack_mode == "read" and cache.stats.packed_experts > 0
    off, cache = run(path, repack="off")
    assert_identical(off, ref)
    assert cache.pack_mode == "off" and cache.stats.packed_experts == 0


@pytest.mark.parametrize("arch", ["mixtral", "qwen2moe"])
def test_hot_packing_mixes_layouts_in_one_step_bit_identically(arch):
    path = gguf_path(arch, "q8_0")
    ref, _ = run(path, n_decode=10, mmap=True, repack="off")
    got, cache = run(path, n_decode=10, ram_budget=8 * slot_size(path), chunk_bytes=8192)  # half of the 16 experts
    assert_identical(got, ref)
    s = cache.stats
    assert cache.pack_mode == "hot" and 0 < s.packed_experts < s.lookups
    assert s.evictions > 0  # experts were read again after eviction, and packed again only once hot
    entries = [e for e in cache._entries.values() if e.weights is not None]
    assert any(e.packed for e in entries) and all(e.found >= REPACK_AFTER for e in entries if e.packed)


def test_tight_budget_never_packs_what_it_cannot_keep():
    path = gguf_path("qwen3moe", "q8_0")
    ref, _ = run(path, mmap=True, repack="off")
    got, cache = run(path, ram_budget=tight_budget(path))
    assert_identical(got, ref)
    assert cache.pack_mode == "hot" and cache.stats.packed_experts == 0 and cache.stats.hits == 0


def test_verified_re_reads_check_file_bytes_not_packed_ones():
    path = gguf_path("mixtral", "q8_0")
    ref, _ = run(path, n_decode=8, mmap=True, repack="off")
    got, cache = run(path, n_decode=8, ram_budget=tight_budget(path), verify=True, repack="on")
    assert_identical(got, ref)
    assert cache.stats.read_errors == 0 and cache.verifier.verified_reads > 0
    assert cache.stats.packed_experts == cache.stats.misses


def test_resident_weights_are_packed_unless_off_and_tied_embeddings_are_not():
    path = gguf_path("mixtral", "q8_0")
    for repack, expect in (("auto", True), ("off", False)):
        lm = load_model(path, progress=False, cache=CacheConfig(repack=repack))
        try:
            assert packed_resident(lm) == [expect] * 3
            assert not lm.model.embedding.packed  # read by row for every token
            out = greedy_logits(lm, 2)
            assert all(torch.isfinite(o).all() for o in out)
        finally:
            lm.close()


def test_unknown_repack_mode_is_a_config_error():
    from moestream.errors import ConfigError

    with pytest.raises(ConfigError, match="--repack"):
        CacheConfig(repack="always")
