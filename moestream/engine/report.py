"""The run summary: speed, cache behaviour, I/O and memory, as one flat dict (printed by the CLI, written by
--stats-json). StepMeter times decode steps and splits each into I/O wait and the rest (compute)."""

from __future__ import annotations

import time

from ..cache.expert_cache import ExpertCache
from ..telemetry import Samples, peak_rss_bytes
from .loader import LoadedModel


class StepMeter:
    """lap() after each decode step: step time, and how much of it acquire spent blocked on reads."""

    def __init__(self, cache: ExpertCache | None):
        self.cache = cache
        self.steps, self.compute = Samples(), Samples()
        self.io_wait = 0.0
        self.bytes_at_start = self._bytes()
        self.start()

    def _io(self) -> float:
        return self.cache.stats.io_wait_seconds if self.cache else 0.0

    def _bytes(self) -> int:
        return self.cache.stats.bytes_read if self.cache else 0

    def start(self) -> None:
        self._t, self._io0 = time.perf_counter(), self._io()

    def lap(self) -> None:
        dt, dio = time.perf_counter() - self._t, self._io() - self._io0
        self.steps.add(dt)
        self.compute.add(dt - dio)
        self.io_wait += dio
        self.start()

    @property
    def bytes_read(self) -> int:
        return self._bytes() - self.bytes_at_start


def run_summary(lm: LoadedModel, prompt_tokens: int, prefill_seconds: float, meter: StepMeter) -> dict:
    decode_seconds = meter.steps.total
    n = len(meter.steps)
    out = {
        "model": str(lm.path), "prompt_tokens": prompt_tokens, "prefill_seconds": prefill_seconds,
        "prefill_tps": prompt_tokens / prefill_seconds if prefill_seconds else 0.0,
        "decode_tokens": n, "decode_seconds": decode_seconds, "decode_tps": n / decode_seconds if decode_seconds else 0.0,
        "step_ms": meter.steps.summary(1e3), "compute_ms_per_token": meter.compute.summary(1e3),
        "io_wait_share": meter.io_wait / decode_seconds if decode_seconds else 0.0,
        "io_wait_ms_per_token": 1e3 * meter.io_wait / n if n else 0.0,  # stall time per decoded token
        "decode_bytes_read_per_token": meter.bytes_read / n if n else 0.0,
        "resident_bytes": lm.resident_bytes, "expert_bytes": lm.expert_bytes,
        "rss_after_load_bytes": lm.rss_after_load, "peak_rss_bytes": peak_rss_bytes(),
        "threads": lm.model.compute.threads,
    }
    if lm.cache is not None:
        out.update(cache_summary(lm.cache))
    return out


def cache_summary(cache: ExpertCache) -> dict:
    s = cache.stats
    return {
        "ram_budget_bytes": cache.pool.budget, "cache_capacity_bytes": cache.pool.capacity_bytes,
        "cache_allocated_bytes": cache.pool.allocated_bytes, "slot_bytes": cache.layout.slot_size,
        "cache_slots": cache.pool.n_slots, "pinned_experts": cache.pinned_count,
        "reader": cache.reader.name, "direct_io": cache.reader.file.direct, "policy": cache.policy.name,
        "lookups": s.lookups, "hits": s.hits, "misses": s.misses, "hit_rate": s.hit_rate, "evictions": s.evictions,
        "bytes_read": s.bytes_read, "read_busy_seconds": s.read_busy_seconds,
        "read_throughput_Bps": s.bytes_read / s.read_busy_seconds if s.read_busy_seconds else 0.0,
        "read_latency_ms": s.read_latency.summary(1e3), "io_wait_seconds": s.io_wait_seconds,
        "routing_counts": [[s.routed.get((layer, e), 0) for e in range(cache.store.n_experts)]
                           for layer in range(cache.store.n_layers)],
        "pack_mode": cache.pack_mode, "packed_experts": s.packed_experts, "pack_seconds": s.pack_seconds,
        **prefetch_summary(cache), **verify_summary(cache),
    }


def verify_summary(cache: ExpertCache) -> dict:
    """--verify-experts: whether it was on; bytes hashed, and bytes (and reads) of re-reads checked equal."""
    v = cache.verifier
    return {"verify_experts": v is not None, "verify_hashed_bytes": v.hashed_bytes if v else 0,
            "verified_bytes": v.verified_bytes if v else 0, "verified_reads": v.verified_reads if v else 0}


def prefetch_summary(cache: ExpertCache) -> dict:
    """Prefetches issued/useful/wasted/cancelled, and the predictor's precision and recall per predicted layer."""
    s = cache.stats
    layers = sorted({layer for layer, _ in s.predicted})
    per_layer = {layer: {k: s.predicted[(layer, k)] for k in ("tp", "fp", "fn")} for layer in layers}
    return {
        "prefetch": bool(cache.prefetcher), "predictor": cache.prefetcher, "prefetch_issued": s.prefetch_issued,
        "prefetch_useful": s.prefetch_useful, "prefetch_late": s.prefetch_late,
        "prefetch_wasted": s.prefetch_wasted, "prefetch_cancelled": s.prefetch_cancelled,
        "predictor_precision": {layer: _ratio(c["tp"], c["tp"] + c["fp"]) for layer, c in per_layer.items()},
        "predictor_recall": {layer: _ratio(c["tp"], c["tp"] + c["fn"]) for layer, c in per_layer.items()},
    }


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0
