"""Replay expert lookups against an eviction policy offline, with the live cache's rules: one acquire is one
layer's distinct experts for one step; hits are touched first, then misses are inserted in request order, each
evicting the policy's first victim that is not part of the same acquire. Capacity is in experts (slots)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .policy import EvictionPolicy, Key


@dataclass
class SimResult:
    lookups: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


def simulate(acquires: Iterable[tuple[int, list[int]]], capacity: int, policy: EvictionPolicy) -> SimResult:
    cached: set[Key] = set()
    result = SimResult()
    for layer, experts in acquires:
        keys = [(layer, e) for e in experts]
        result.lookups += len(keys)
        for key in keys:
            if key in cached:
                result.hits += 1
                policy.hit(key)
        for key in (k for k in keys if k not in cached):
            if len(cached) >= capacity:
                _evict(cached, policy, set(keys))
            cached.add(key)
            policy.inserted(key)
    return result


def _evict(cached: set[Key], policy: EvictionPolicy, in_use: set[Key]) -> None:
    victim = next(k for k in policy.victims() if k not in in_use)
    cached.discard(victim)
    policy.removed(victim)
