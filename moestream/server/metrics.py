"""Prometheus metrics for `GET /metrics`: requests, tokens, throughput, expert cache, read and step latency,
queue depth. Cache counters are read from the cache's own statistics at scrape time, so they never drift.

Every HTTP response is counted by endpoint and status where it leaves the app (`app.py`), 5xx included, so no
error path can forget it. State kept between scrapes is bounded: generated tokens are counted per second of a
window that drops old seconds as new ones begin, so a server nobody scrapes holds at most a dozen entries.

Per-layer lookups and hits (what `moestream top` draws as its layer strip) are read for the layers the store has
experts in, by key, never by iterating the engine thread's counters (a dict that gains a key mid-iteration raises).
Memory is read from /proc (and the memory cgroup) at scrape time: a few small file reads, nothing on the decode
path."""

from __future__ import annotations

import math
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..engine import StepInfo, available_memory, rss_bytes

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
THROUGHPUT_WINDOW_S = 10.0


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("moestream_requests", "HTTP responses by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.in_flight = Gauge("moestream_http_requests_in_flight", "HTTP requests being answered", registry=r)
        self.preparing = Gauge("moestream_preparing_requests",
                               "requests whose body is being parsed and tokenized (off the event loop)", registry=r)
        self.prompt_tokens = Counter("moestream_prompt_tokens", "prompt tokens processed", registry=r)
        self.generated_tokens = Counter("moestream_generated_tokens", "tokens generated", registry=r)
        self.step_latency = Histogram("moestream_step_latency_seconds", "one batched forward step", registry=r,
                                      buckets=LATENCY_BUCKETS)
        self.read_latency = Histogram("moestream_expert_read_latency_seconds", "one expert read, submit to done",
                                      registry=r, buckets=LATENCY_BUCKETS)
        self.batch_size = Gauge("moestream_batch_size", "sequences in the last step", registry=r)
        self.running = Gauge("moestream_running_sequences", "sequences in the running batch", registry=r)
        self.queue_depth = Gauge("moestream_queue_depth", "requests waiting for a batch slot", registry=r)
        self.tokens_per_second = Gauge("moestream_tokens_per_second",
                                       f"generated tokens per second over the last {THROUGHPUT_WINDOW_S:.0f} s",
                                       registry=r)
        self._recent: deque[list[int]] = deque()  # [second, tokens generated in it], oldest first
        self._cache = None
        self._prompt_cache = None
        r.register(_CacheCollector(self))
        r.register(_PromptCacheCollector(self))
        r.register(_MemoryCollector())
        self._shard = lambda: []  # () -> per-rank counters of an expert-sharded engine (Engine.shard_ranks)
        r.register(_ShardCollector(self))

    def attach(self, cache, load, prompt_cache=None, shard=None) -> None:
        """cache: the ExpertCache (or None); load: () -> (running, waiting); prompt_cache: the PromptCache or None;
        shard: () -> per-rank counters (expert sharding) or None."""
        self._cache, self._prompt_cache = cache, prompt_cache
        self._shard = shard or (lambda: [])
        self.running.set_function(lambda: load()[0])
        self.queue_depth.set_function(lambda: load()[1])

    def on_step(self, info: StepInfo) -> None:  # engine thread
        self.step_latency.observe(info.seconds)
        self.batch_size.set(info.sequences)
        self._drain_read_latency()

    def on_token(self) -> None:
        self.generated_tokens.inc()
        now = time.monotonic()
        second = math.floor(now)
        if self._recent and self._recent[-1][0] == second:
            self._recent[-1][1] += 1
        else:
            self._recent.append([second, 1])
            self._prune(now)

    def exposition(self) -> bytes:
        self._update_throughput()
        return generate_latest(self.registry)

    def _update_throughput(self) -> None:
        self._prune(time.monotonic())
        self.tokens_per_second.set(sum(n for _, n in self._recent) / THROUGHPUT_WINDOW_S)

    def _prune(self, now: float) -> None:
        while self._recent and self._recent[0][0] + 1 <= now - THROUGHPUT_WINDOW_S:  # wholly outside the window
            self._recent.popleft()

    def _drain_read_latency(self) -> None:
        """Move new read latencies into the histogram and drop them from the cache's list, which a server
        would otherwise grow forever."""
        if self._cache is None:
            return
        values = self._cache.stats.read_latency.values
        n = len(values)
        for v in values[:n]:
            self.read_latency.observe(v)
        del values[:n]  # appends from the reader thread after `n` stay for the next step


class _CacheCollector:
    """Expert-cache counters straight from CacheStats, per layer too, and the cache's sizes."""

    FIELDS = (("lookups", "expert lookups"), ("hits", "expert cache hits"), ("misses", "expert cache misses"),
              ("evictions", "experts evicted"), ("bytes_read", "bytes read from the model file"),
              ("read_errors", "failed expert reads"))

    SIZES = (("bytes", "used_bytes", "bytes of expert cache slots holding an expert or a read in flight"),
             ("allocated_bytes", "allocated_bytes", "bytes of expert cache slots made so far, in use or free"),
             ("budget_bytes", "budget_bytes", "the expert cache's byte budget (--ram-budget)"))

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        cache = self.metrics._cache
        for name, doc in self.FIELDS:
            family = CounterMetricFamily(f"moestream_cache_{name}", doc)
            family.add_metric([], getattr(cache.stats, name) if cache is not None else 0)
            yield family
        yield from self._per_layer(cache)
        for name, attr, doc in self.SIZES:
            family = GaugeMetricFamily(f"moestream_cache_{name}", doc)
            family.add_metric([], getattr(cache, attr) if cache is not None else 0)
            yield family

    @staticmethod
    def _per_layer(cache):
        lookups = CounterMetricFamily("moestream_cache_layer_lookups", "expert lookups by layer", labels=["layer"])
        hits = CounterMetricFamily("moestream_cache_layer_hits", "expert cache hits by layer", labels=["layer"])
        for layer in cache.store.layers if cache is not None else ():
            lookups.add_metric([str(layer)], cache.stats.layer_lookups.get(layer, 0))
            hits.add_metric([str(layer)], cache.stats.layer_hits.get(layer, 0))
        return lookups, hits


class _MemoryCollector:
    """This process's resident set and the memory it could still get."""

    def collect(self):
        rss = GaugeMetricFamily("moestream_process_resident_bytes", "resident set of the server process")
        rss.add_metric([], rss_bytes())
        yield rss
        room = GaugeMetricFamily("moestream_memory_available_bytes",
                                 "bytes this process could still use: MemAvailable, or less under a cgroup limit")
        room.add_metric([], available_memory())
        yield room


class _PromptCacheCollector:
    """Prompt-cache counters and size (all zero without --prompt-cache)."""

    COUNTERS = (("lookup_tokens", "prompt tokens looked up in the prompt cache"),
                ("hit_tokens", "prompt tokens whose KV rows came from the prompt cache"),
                ("stored_blocks", "token blocks stored in the prompt cache"),
                ("evicted_blocks", "token blocks evicted from the prompt cache"),
                ("disk_blocks", "token blocks read back from the prompt cache's disk tier"))

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        pc = self.metrics._prompt_cache
        for name, doc in self.COUNTERS:
            family = CounterMetricFamily(f"moestream_prompt_cache_{name}", doc)
            family.add_metric([], getattr(pc.stats, name) if pc is not None else 0)
            yield family
        size = GaugeMetricFamily("moestream_prompt_cache_bytes", "bytes of KV rows the prompt cache holds")
        size.add_metric([], pc.bytes if pc is not None else 0)
        yield size
        disk = GaugeMetricFamily("moestream_prompt_cache_disk_bytes", "bytes the prompt cache keeps on disk")
        disk.add_metric([], pc.disk.bytes if pc is not None and pc.disk is not None else 0)
        yield disk


class _ShardCollector:
    """Expert sharding, per rank: experts owned, lookups, hits, bytes read, expert compute, and for ranks > 0 the
    exchange time rank 0 saw, what it waited of it, and the network's share (exchange less remote compute); absent
    when not sharded."""

    COUNTERS = (("lookups", "expert lookups"), ("hits", "expert cache hits"), ("bytes_read", "expert bytes read"),
                ("compute_seconds", "seconds of expert compute (ranks > 0)"),
                ("exchange_seconds", "seconds from sending a layer's rows to the reply (ranks > 0, seen by rank 0)"),
                ("waited_seconds", "seconds rank 0 waited for a rank after its own experts"),
                ("network_seconds", "exchange seconds not spent computing on the rank"),
                ("prefetch_hinted", "experts rank 0's prefetcher named for the rank to read ahead (ranks > 0)"),
                ("prefetch_issued", "reads ahead the rank's cache started"),
                ("prefetch_useful", "reads ahead whose expert was then asked for"))

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        ranks = self.metrics._shard()
        if not ranks:
            return
        owned = GaugeMetricFamily("moestream_shard_experts", "routed experts the rank owns", labels=["rank"])
        for r in ranks:
            owned.add_metric([str(r["rank"])], r["experts"])
        yield owned
        for name, doc in self.COUNTERS:
            family = CounterMetricFamily(f"moestream_shard_{name}", doc, labels=["rank"])
            for r in ranks:
                if name in r:
                    family.add_metric([str(r["rank"])], r[name])
            yield family
