"""What the expert cache keeps per expert (Entry) and counts over a run (CacheStats): plain records, no I/O and no
locks, so the cache's logic (expert_cache.py) reads apart from its bookkeeping."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..formats.weight import ExpertWeights
from ..store.reader import ReadJob
from ..telemetry import Samples
from .tiers import Slot


@dataclass
class Entry:
    slot: Slot
    weights: ExpertWeights | None = None  # None while its read is in flight
    refs: int = 0
    pinned: bool = False
    prefetched: bool = False  # read ahead of need and not used yet
    job: ReadJob | None = None  # its background read, while in flight
    found: int = 0  # times an acquire found it in the cache
    packed: bool = False  # its bytes were rewritten by the packer


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes_read: int = 0
    read_errors: int = 0
    io_wait_seconds: float = 0.0  # time acquire spent blocked on reads
    read_busy_seconds: float = 0.0  # time with reads in flight (first issue -> last completion, per acquire)
    routed: Counter = field(default_factory=Counter)  # (layer, expert) -> times requested: a routing profile
    layer_lookups: Counter = field(default_factory=Counter)  # layer -> expert lookups (per-layer hit rates, /metrics)
    layer_hits: Counter = field(default_factory=Counter)  # layer -> of those, found in the cache
    read_latency: Samples = field(default_factory=Samples)  # per expert: submit -> all bytes in
    prefetch_issued: int = 0
    prefetch_useful: int = 0  # a prefetched expert was then acquired
    prefetch_late: int = 0  # ... while its read was still in flight (the acquire waited for the rest)
    prefetch_wasted: int = 0  # evicted unused
    prefetch_cancelled: int = 0  # dropped before its read started
    predicted: Counter = field(default_factory=Counter)  # (layer, "tp" | "fp" | "fn") -> experts: predictor quality
    packed_experts: int = 0
    pack_seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0
