"""Replay expert lookups against an eviction policy offline, with the live cache's rules: one acquire is one
layer's distinct experts for one step; hits are touched first and held to the end of the acquire, then misses are
inserted in request order, each evicting the policy's first victim that is not held. When every cached expert is
held (an acquire with more misses than free slots: a prefill), the misses read so far are computed and released,
as the live cache does in waves, and become evictable. Capacity is in experts (slots)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


Plan = Sequence[list[tuple[int, list[int]]]]  # per acquire: (target layer, experts) read ahead after it, in order


@dataclass
class PrefetchResult(SimResult):
    reads: int = 0  # experts read: demand misses plus prefetches
    prefetched: int = 0
    useful: int = 0  # prefetched, then acquired

    @property
    def read_rate(self) -> float:
        """Reads per lookup: comparable with a demand-only cache's miss rate (1 - hit rate)."""
        return self.reads / self.lookups if self.lookups else 0.0


def simulate_prefetch(acquires: Sequence[tuple[int, list[int]]], plan: Plan, capacity: int,
                      policy: EvictionPolicy) -> PrefetchResult:
    """`simulate` plus the live cache's prefetch rules, with reads taken to land before they are needed (an upper
    bound on what prefetch can do: a late prefetch still saves a read but not the whole wait). After each acquire's
    demand reads: a predicted expert already cached is protected until its layer's acquire; one not cached is
    read into a slot taken from the policy's first victim that is not held, protected, an unused prefetch, or of a
    layer between the current one and the target. At a layer's acquire its unused prefetches are dropped."""
    sim = _PrefetchSim(capacity, policy)
    for (layer, experts), ahead in zip(acquires, plan):
        sim.acquire(layer, experts)
        for target, predicted in ahead:
            sim.prefetch(layer, target, predicted)
    return sim.result


class _PrefetchSim:
    def __init__(self, capacity: int, policy: EvictionPolicy):
        self.capacity, self.policy = capacity, policy
        self.cached: set[Key] = set()
        self.unused: dict[int, set[Key]] = {}  # layer -> prefetched, not acquired yet
        self.protected: dict[int, set[Key]] = {}
        self.held: set[Key] = set()
        self.result = PrefetchResult()

    def acquire(self, layer: int, experts: list[int]) -> None:
        r, keys = self.result, [(layer, e) for e in experts]
        self.protected.pop(layer, None)
        unused = self.unused.pop(layer, set())
        hits = [k for k in keys if k in self.cached]
        r.lookups, r.hits, r.useful = r.lookups + len(keys), r.hits + len(hits), r.useful + len(unused & set(hits))
        for key in hits:
            self.policy.hit(key)
        for key in unused - set(hits):  # dropped: the acquire passed them by
            self.cached.discard(key)
            self.policy.removed(key)
        self.held = set(hits)
        for key in (k for k in keys if k not in self.cached):
            if len(self.cached) >= self.capacity:
                self._make_room(set(hits))
            self.cached.add(key)
            self.held.add(key)
            self.policy.inserted(key)
            r.reads += 1

    def _make_room(self, hits: set[Key]) -> None:
        """A demand read evicts what it need not hold, protected experts last; when it holds everything (a
        prefill wave), the misses read so far are computed and released first, as in `simulate`."""
        free = lambda k: k not in self.held  # noqa: E731
        if not (self._evict(free, spare_protected=True) or self._evict(free, spare_protected=False)):
            self.held = set(hits)
            self._evict(free, spare_protected=False)

    def prefetch(self, layer: int, target: int, experts: list[int]) -> None:
        for key in ((target, e) for e in experts):
            if key in self.cached:
                if key not in self.unused.get(target, ()):
                    self.protected.setdefault(target, set()).add(key)
                continue
            if len(self.cached) >= self.capacity and not self._evict(
                    lambda k: k not in self.held and not layer < k[0] < target and not self._unused(k)):
                return
            self.cached.add(key)
            self.unused.setdefault(target, set()).add(key)
            self.policy.inserted(key)
            self.result.reads += 1
            self.result.prefetched += 1

    def _unused(self, key: Key) -> bool:
        return key in self.unused.get(key[0], ())

    def _evict(self, allowed, spare_protected: bool = True) -> bool:
        victim = next((k for k in self.policy.victims()
                       if allowed(k) and not (spare_protected and k in self.protected.get(k[0], ()))), None)
        if victim is None:
            return False
        self._remove(victim)
        return True

    def _remove(self, key: Key) -> None:
        self.cached.discard(key)
        self.unused.get(key[0], set()).discard(key)
        self.protected.get(key[0], set()).discard(key)
        self.policy.removed(key)
