"""Cache bookkeeping: sizes, the LRU policy, and the live cache against an independent LRU simulation."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from moestream.cache.config import CacheConfig, parse_bytes
from moestream.cache.expert_cache import ExpertCache
from moestream.cache.policy import LRU, make_policy
from moestream.engine.loader import check_model
from moestream.engine.streaming import open_reader
from moestream.errors import ConfigError
from moestream.formats.gguf import GGUFFile
from tests.cache.streaming_helpers import slot_size
from tests.fixtures.tiny_models import gguf_path


@pytest.mark.parametrize("text, value", [
    ("8GiB", 8 << 30), ("512MiB", 512 << 20), ("1.5G", int(1.5 * (1 << 30))), ("1000000", 10**6), ("2 gb", 2 * 10**9),
    ("64KiB", 64 << 10),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "8XB", "-1GiB", "1e3"])
def test_parse_bytes_refuses_nonsense(text):
    with pytest.raises(ConfigError, match="cannot read"):
        parse_bytes(text)


def test_lru_evicts_least_recently_used_first():
    lru = LRU()
    for k in "abcd":
        lru.inserted(k)
    lru.hit("a")
    lru.removed("c")
    assert list(lru.victims()) == ["b", "d", "a"]
    with pytest.raises(ConfigError, match="unknown cache policy"):
        make_policy("fifo-ish")


def simulate_lru(requests: list[tuple[int, list[int]]], capacity: int) -> tuple[int, int, int]:
    """Independent LRU over (layer, expert) keys: hits refreshed in request order, then misses inserted in order,
    evicting the least recent key not requested by the same step."""
    order: OrderedDict = OrderedDict()
    hits = misses = evictions = 0
    for layer, experts in requests:
        keys = [(layer, e) for e in experts]
        for key in keys:
            if key in order:
                hits += 1
                order.move_to_end(key)
        for key in keys:
            if key in order:
                continue
            misses += 1
            if len(order) == capacity:
                victim = next(k for k in order if k not in keys)
                del order[victim]
                evictions += 1
            order[key] = None
    return hits, misses, evictions


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity", [2, 5, 11])
def test_live_cache_counts_equal_an_lru_simulation(seed, capacity):
    path = gguf_path("qwen2moe", "q8_0")
    info = check_model(GGUFFile(path))
    rng = random.Random(seed)
    n_layers, n_experts, k = info.args.n_layers, info.args.n_experts, info.args.n_experts_used
    skewed = [e for e in range(n_experts) for _ in range(n_experts - e)]  # popular experts, as trained models have
    requests = []
    for step in range(150):
        layer = step % n_layers
        picked = sorted({rng.choice(skewed) for _ in range(k)})
        requests.append((layer, picked))
    config = CacheConfig(depth=3, chunk_bytes=8192)
    cache = ExpertCache(info.experts, open_reader(path, config), capacity * slot_size(path), min(k, capacity),
                        chunk_bytes=config.chunk_bytes)
    try:
        for layer, experts in requests:
            for _batch in cache.acquire(layer, experts):
                assert cache.pool.allocated_bytes <= cache.pool.budget
            assert all(e.refs == 0 for e in cache._entries.values())
        s = cache.stats
        assert (s.hits, s.misses, s.evictions) == simulate_lru(requests, capacity)
        assert s.lookups == sum(len(e) for _, e in requests)
        assert cache.resident_experts <= capacity
    finally:
        cache.close()
