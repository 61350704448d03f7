"""Belady's MIN against a brute-force optimum (every eviction choice tried) on small random traces, and as an
upper bound of the online policies."""

from __future__ import annotations

import functools
import random

import pytest

from moestream.cache.belady import belady
from moestream.cache.policy import LRU, LayerCycle
from moestream.cache.simulate import simulate


def brute_force_hits(acquires: list[tuple[int, list[int]]], capacity: int) -> int:
    """The most hits any sequence of eviction choices gets, under the live cache's rules."""

    @functools.lru_cache(maxsize=None)
    def best(t: int, cached: frozenset) -> int:
        if t == len(acquires):
            return 0
        layer, experts = acquires[t]
        keys = {(layer, e) for e in experts}
        hits = len(keys & cached)
        return hits + max(best(t + 1, state) for state in _after(cached, keys, capacity))

    return best(0, frozenset())


def _after(cached: frozenset, keys: set, capacity: int) -> list[frozenset]:
    """Every cache state reachable by serving `keys`: misses are inserted, evicting keys outside `keys`."""
    states = [cached]
    for key in sorted(keys - cached):
        nxt = []
        for state in states:
            if len(state) < capacity:
                nxt.append(state | {key})
            else:
                nxt += [(state - {v}) | {key} for v in state if v not in keys]
        states = nxt
    return list(set(states))


def random_trace(rng: random.Random, n: int, layers: int, experts: int, k: int) -> list[tuple[int, list[int]]]:
    return [(t % layers, sorted(rng.sample(range(experts), k))) for t in range(n)]


@pytest.mark.parametrize("seed", range(12))
def test_belady_equals_the_brute_force_optimum(seed):
    rng = random.Random(seed)
    layers, experts, k = rng.choice([(1, 5, 1), (2, 4, 2), (3, 3, 1), (2, 5, 2)])
    trace = random_trace(rng, 14, layers, experts, k)
    for capacity in range(k, min(layers * experts, k + 3) + 1):
        assert belady(trace, capacity).hits == brute_force_hits(trace, capacity), (trace, capacity)


@pytest.mark.parametrize("seed", range(3))
def test_belady_bounds_the_online_policies(seed):
    rng = random.Random(seed)
    trace = random_trace(rng, 400, 4, 8, 2)
    for capacity in (2, 8, 16, 24):
        best = belady(trace, capacity).hits
        assert simulate(trace, capacity, LRU()).hits <= best
        assert simulate(trace, capacity, LayerCycle()).hits <= best
