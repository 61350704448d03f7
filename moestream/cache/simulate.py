"""Replay expert lookups against an eviction policy offline, with the live cache's rules: one acquire is one
layer's distinct experts for one step; hits are touched first and held to the end of the acquire, then misses are
inserted in request order, each evicting the policy's first victim that is not held. When every cached expert is
held (an acquire with more misses than free slots: a prefill), the misses read so far are computed and released,
as the live cache does in waves, and become evictable. Capacity is in experts (slots)."""

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
        hits = [key for key in keys if key in cached]
        result.hits += len(hits)
        for key in hits:
            policy.hit(key)
        wave: set[Key] = set()
        for key in (k for k in keys if k not in cached):
            if len(cached) >= capacity:
                wave = _evict(cached, policy, set(hits), wave)
            cached.add(key)
            wave.add(key)
            policy.inserted(key)
    return result


def _evict(cached: set[Key], policy: EvictionPolicy, hits: set[Key], wave: set[Key]) -> set[Key]:
    """Evict one expert; returns the wave still held (emptied when the wave had to end to free a slot)."""
    victim = next((k for k in policy.victims() if k not in hits and k not in wave), None)
    if victim is None:
        wave = set()
        victim = next(k for k in policy.victims() if k not in hits)
    cached.discard(victim)
    policy.removed(victim)
    return wave
