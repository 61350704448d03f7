"""Belady's MIN: the best hit rate any eviction policy could reach on a trace, knowing the future. On a miss it
evicts the cached expert whose next use is farthest away (never used again counts as infinitely far), skipping
the experts the acquire being served holds. Same rules as `simulate`, waves included."""

from __future__ import annotations

from collections.abc import Sequence

from .simulate import SimResult

NEVER = float("inf")


def belady(acquires: Sequence[tuple[int, list[int]]], capacity: int) -> SimResult:
    next_use = _next_uses(acquires)
    cached: dict[tuple[int, int], float] = {}  # key -> index of its next acquire
    result = SimResult()
    for t, (layer, experts) in enumerate(acquires):
        keys = [(layer, e) for e in experts]
        result.lookups += len(keys)
        hits = {key for key in keys if key in cached}
        result.hits += len(hits)
        for key in hits:
            cached[key] = next_use[t][key]
        wave: set = set()
        for key in (k for k in keys if k not in hits):
            if len(cached) >= capacity:
                free = [k for k in cached if k not in hits and k not in wave]
                if not free:  # everything is held: the wave so far is computed and released, as in `simulate`
                    wave, free = set(), [k for k in cached if k not in hits]
                del cached[max(free, key=cached.__getitem__)]
            cached[key] = next_use[t][key]
            wave.add(key)
    return result


def _next_uses(acquires: Sequence[tuple[int, list[int]]]) -> list[dict]:
    """For each acquire t and each of its keys: the index of the next acquire that asks for the key again."""
    upcoming: dict[tuple[int, int], float] = {}
    out: list[dict] = [{} for _ in acquires]
    for t in range(len(acquires) - 1, -1, -1):
        layer, experts = acquires[t]
        for e in experts:
            out[t][(layer, e)] = upcoming.get((layer, e), NEVER)
            upcoming[(layer, e)] = t
    return out
