"""The prefetch simulator against the live cache: with every prefetch landed before the next acquire, the live
cache's hits, reads and useful prefetches equal the simulator's; with no prefetches it is the demand simulator;
and no prefetch plan reads fewer experts than Belady's MIN misses."""

from __future__ import annotations

import random
import time

import pytest

from moestream.cache.belady import belady
from moestream.cache.config import CacheConfig
from moestream.cache.expert_cache import ExpertCache
from moestream.cache.policy import POLICIES, make_policy
from moestream.cache.simulate import simulate, simulate_prefetch
from moestream.engine.loader import check_model
from moestream.engine.streaming import open_reader
from moestream.formats.gguf import GGUFFile
from tests.cache.streaming_helpers import slot_size
from tests.fixtures.tiny_models import gguf_path


def skewed_requests(rng: random.Random, n_layers: int, n_experts: int, k: int, steps: int):
    skewed = [e for e in range(n_experts) for _ in range(n_experts - e)]  # popular experts, as trained models have
    return [(s % n_layers, sorted({rng.choice(skewed) for _ in range(k)})) for s in range(steps)]


def noisy_plan(rng: random.Random, requests, depth: int, n_experts: int):
    """After each acquire: for the next `depth` acquires of later layers, their experts with some swapped for
    random ones and some extra (a predictor that is often right, sometimes wrong)."""
    plan = []
    for t, (layer, _) in enumerate(requests):
        ahead = []
        for later_layer, experts in requests[t + 1:t + 1 + depth]:
            if later_layer <= layer:
                break  # a new step: the live prefetcher does not look past the last layer
            guess = [e if rng.random() < 0.7 else rng.randrange(n_experts) for e in experts]
            guess += [rng.randrange(n_experts)] if rng.random() < 0.3 else []
            ahead.append((later_layer, list(dict.fromkeys(guess))))
        plan.append(ahead)
    return plan


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("capacity", [4, 7, 11])
def test_live_cache_with_landed_prefetches_equals_the_simulator(seed, capacity, policy):
    path = gguf_path("qwen2moe", "q8_0")
    info = check_model(GGUFFile(path))
    rng = random.Random(seed)
    a = info.args
    requests = skewed_requests(rng, a.n_layers, a.n_experts, a.n_experts_used, 120)
    plan = noisy_plan(rng, requests, 2, a.n_experts)
    config = CacheConfig(depth=3, chunk_bytes=8192)
    cache = ExpertCache(info.experts, open_reader(path, config), capacity * slot_size(path), a.n_experts_used,
                        make_policy(policy), chunk_bytes=config.chunk_bytes)
    issued = iter(plan)
    cache.on_acquire = lambda layer, experts: [cache.prefetch(t, e) for t, e in next(issued)]
    try:
        for layer, experts in requests:
            for _batch in cache.acquire(layer, experts):
                assert cache.pool.allocated_bytes <= cache.pool.budget
            while cache._pending_prefetches():  # let every read ahead land before the next acquire
                time.sleep(0.001)
        s = cache.stats
        sim = simulate_prefetch(requests, plan, capacity, make_policy(policy))
        assert s.prefetch_issued > 0 and s.prefetch_cancelled == 0
        assert (s.lookups, s.hits, s.prefetch_useful) == (sim.lookups, sim.hits, sim.useful)
        assert (s.misses + s.prefetch_issued, s.prefetch_issued) == (sim.reads, sim.prefetched)
    finally:
        cache.close()


@pytest.mark.parametrize("seed", range(6))
def test_prefetch_simulator_without_prefetches_is_the_demand_simulator(seed):
    rng = random.Random(seed)
    requests = skewed_requests(rng, 4, 8, 2, 200)
    for policy in POLICIES:
        for capacity in (2, 5, 13):
            demand = simulate(requests, capacity, make_policy(policy))
            got = simulate_prefetch(requests, [[] for _ in requests], capacity, make_policy(policy))
            assert (got.lookups, got.hits, got.reads) == (demand.lookups, demand.hits, demand.lookups - demand.hits)


@pytest.mark.parametrize("seed", range(6))
def test_no_prefetch_plan_reads_fewer_experts_than_belady_misses(seed):
    """Any prefetching cache can be turned into a demand cache that reads no more (a classic result), so MIN's
    misses bound the reads of every plan, a perfect predictor's included."""
    rng = random.Random(seed)
    requests = skewed_requests(rng, 4, 8, 2, 200)
    perfect = [[(later, experts) for later, experts in requests[t + 1:t + 3] if later > layer]
               for t, (layer, _) in enumerate(requests)]
    for capacity in (3, 6, 12):
        floor = belady(requests, capacity)
        for plan in (perfect, noisy_plan(rng, requests, 2, 8)):
            for policy in POLICIES:
                got = simulate_prefetch(requests, plan, capacity, make_policy(policy))
                assert got.reads >= floor.lookups - floor.hits
