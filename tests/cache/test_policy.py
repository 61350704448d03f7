"""Cache bookkeeping: sizes, the LRU and layer-cycle policies, the offline simulator, and the live cache against
the simulator and an independent LRU simulation."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from moestream.cache.config import CacheConfig, parse_bytes
from moestream.cache.expert_cache import ExpertCache
from moestream.cache.policy import LFU, LRU, POLICIES, LayerCycle, LayerLFU, make_policy
from moestream.cache.simulate import simulate
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


def test_layer_policy_evicts_the_layer_that_comes_round_last():
    p = LayerCycle()
    for key in [(0, 1), (1, 2), (2, 3), (0, 4), (1, 5)]:
        p.inserted(key)
    p.hit((0, 1))  # layer 0 is being fetched: its other experts first, then layer 2, then layer 1 (next up)
    assert list(p.victims()) == [(0, 4), (0, 1), (2, 3), (1, 2), (1, 5)]


def test_layer_policy_keeps_a_stable_part_where_lru_thrashes():
    # every step needs all 8 experts of each of 4 layers; the budget holds half of them
    steps = [(layer, list(range(8))) for _ in range(20) for layer in range(4)]
    assert simulate(steps, 16, LRU()).hits == 0
    assert simulate(steps, 16, LayerCycle()).hit_rate >= 0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_simulator_lru_equals_an_independent_lru(seed):
    rng = random.Random(seed)
    steps = [(s % 3, sorted(rng.sample(range(6), 2))) for s in range(300)]
    for capacity in (2, 3, 7):
        hits, misses, _ = simulate_lru(steps, capacity)
        assert simulate(steps, capacity, LRU()).hits == hits


def test_lfu_policies_evict_the_least_used_first():
    lfu, layered = LFU(), LayerLFU()
    for p in (lfu, layered):
        for key in [(0, 1), (0, 2), (1, 3), (1, 4)]:
            p.inserted(key)
        for key in [(0, 1), (0, 1), (1, 4), (0, 2)]:
            p.hit(key)
    assert list(lfu.victims()) == [(1, 3), (1, 4), (0, 2), (0, 1)]  # counts 1, 2, 2, 3: (1, 4) was used less recently
    assert list(layered.victims()) == [(0, 2), (0, 1), (1, 3), (1, 4)]  # layer 0 (current) first, by count


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity", [2, 5, 11])
def test_live_cache_counts_equal_the_simulator(seed, capacity, policy):
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
                        make_policy(policy), chunk_bytes=config.chunk_bytes)
    try:
        for layer, experts in requests:
            for _batch in cache.acquire(layer, experts):
                assert cache.pool.allocated_bytes <= cache.pool.budget
            assert all(e.refs == 0 for e in cache._entries.values())
        s = cache.stats
        assert s.hits == simulate(requests, capacity, make_policy(policy)).hits
        if policy == "lru":
            assert (s.hits, s.misses, s.evictions) == simulate_lru(requests, capacity)
        assert s.lookups == sum(len(e) for _, e in requests)
        assert cache.resident_experts <= capacity
    finally:
        cache.close()
