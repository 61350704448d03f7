"""The numbers behind `moestream top`, apart from the terminal UI (top_app.py) so they can be tested alone: one
scrape of a server's Prometheus `/metrics` becomes a frozen Snapshot; two snapshots become a View (rates over
the interval between them); a histogram's cumulative buckets give percentiles.

Rules, and why:
- Rates come only from two scrapes of the same server run. Any counter lower than at the previous scrape means
  the server restarted (its counters began again at 0), so that older scrape is not used: the view shows the
  since-start numbers and no rates until the next scrape, never a negative rate. The app also forgets the older
  scrape after a failed one, so a rate never spans a gap in which the server may have restarted.
- Percentiles interpolate linearly within a bucket, as Prometheus's `histogram_quantile` does, so they agree with
  a Grafana panel over the same server. They cover the last interval's observations (bucket deltas) when it had
  any, else everything since the server started; Percentiles.over says which.
- A server without a newer metric (an older moestream) gives None for it, shown as "-", not an error; a page
  without moestream's cache counters is not a moestream server, and parsing it fails (ValueError).
No textual here, and no I/O but `fetch`."""

from __future__ import annotations

import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ..errors import ConfigError

FETCH_TIMEOUT = 2.0  # seconds: a server that takes longer to answer /metrics shows as disconnected, not a frozen UI
INTERVAL, SINCE_START, NO_DATA = "last interval", "since start", "no observations yet"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (sample name, sorted labels) -> value


@dataclass(frozen=True)
class Buckets:
    """A Prometheus histogram: cumulative observation counts at ascending upper bounds (the last is +Inf)."""
    bounds: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()

    @property
    def total(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def minus(self, older: Buckets) -> Buckets:
        """The observations made since `older` (same bounds; a histogram whose bounds changed counts afresh)."""
        if older.bounds != self.bounds:
            return self
        return Buckets(self.bounds, tuple(a - b for a, b in zip(self.counts, older.counts)))


@dataclass(frozen=True)
class Snapshot:
    """One scrape. Counters are since the server started; `at` is the scrape's time.monotonic(), in seconds."""
    at: float
    tokens_per_second: float
    running: float
    queued: float
    generated: float
    lookups: float
    hits: float
    bytes_read: float
    layers: tuple[tuple[int, float, float], ...]  # (layer, lookups, hits), by layer
    read_latency: Buckets
    step_latency: Buckets
    rss: float | None
    cache_bytes: float | None
    cache_budget: float | None
    available: float | None

    def counters(self) -> tuple[float, ...]:
        """Every monotonic count in the scrape, in a fixed order: one of them going down means a restart."""
        per_layer = tuple(v for _, lookups, hits in self.layers for v in (lookups, hits))
        return (self.generated, self.lookups, self.hits, self.bytes_read, self.read_latency.total,
                self.step_latency.total, *per_layer)


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None
    over: str  # INTERVAL, SINCE_START or NO_DATA


@dataclass(frozen=True)
class View:
    """What the dashboard shows for one scrape, given the one before it."""
    now: Snapshot
    seconds: float | None  # the interval the rates cover; None when there is no earlier scrape of this server run
    restarted: bool  # counters went backwards since the previous scrape
    hit_rate: float | None  # since the server started; None before any lookup
    hit_rate_interval: float | None  # None without an interval or without lookups in it
    bytes_read_per_s: float | None
    read_latency: Percentiles
    step_latency: Percentiles
    layer_hit_rates: tuple[tuple[int, float | None], ...]  # (layer, hit rate over `layers_over`)
    layers_over: str  # INTERVAL when the interval had lookups, else SINCE_START


# -- scrape -> Snapshot ---------------------------------------------------------------------------------------------

def metrics_url(url: str) -> str:
    """The /metrics address of the server at `url` (a base URL, its /v1, or /metrics itself)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url {url!r} is not an http:// or https:// address; give the server's, "
                          f"e.g. http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    for suffix in ("/metrics", "/v1"):
        path = path.removesuffix(suffix)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "/metrics", "", ""))


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> str:
    """GET `url` -> its text. No proxy from the environment: a dashboard scrapes its server directly."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.read().decode("utf-8", errors="replace")


def failure_reason(exc: BaseException) -> str:
    """A scrape's failure in a few words ("connection refused", "HTTP 503", "timed out")."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (ValueError on text that is not an exposition)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def parse(text: str, at: float) -> Snapshot:
    got = samples(text)
    if ("moestream_cache_lookups_total", ()) not in got:
        raise ValueError("no moestream metrics there (is it a `moestream serve`?)")
    def value(name: str, default: float | None = 0.0) -> float | None:
        return got.get((name, ()), default)

    return Snapshot(
        at=at, tokens_per_second=value("moestream_tokens_per_second"), running=value("moestream_running_sequences"),
        queued=value("moestream_queue_depth"), generated=value("moestream_generated_tokens_total"),
        lookups=value("moestream_cache_lookups_total"), hits=value("moestream_cache_hits_total"),
        bytes_read=value("moestream_cache_bytes_read_total"), layers=_layers(got),
        read_latency=_buckets(got, "moestream_expert_read_latency_seconds"),
        step_latency=_buckets(got, "moestream_step_latency_seconds"),
        rss=value("moestream_process_resident_bytes", None), cache_bytes=value("moestream_cache_bytes", None),
        cache_budget=value("moestream_cache_budget_bytes", None),
        available=value("moestream_memory_available_bytes", None))


def _layers(got: Samples) -> tuple[tuple[int, float, float], ...]:
    lookups = {int(dict(labels)["layer"]): v for (name, labels), v in got.items()
               if name == "moestream_cache_layer_lookups_total"}
    hits = {int(dict(labels)["layer"]): v for (name, labels), v in got.items()
            if name == "moestream_cache_layer_hits_total"}
    return tuple((layer, lookups[layer], hits.get(layer, 0.0)) for layer in sorted(lookups))


def _buckets(got: Samples, name: str) -> Buckets:
    pairs = sorted((float(dict(labels)["le"]), v) for (sample, labels), v in got.items() if sample == name + "_bucket")
    return Buckets(tuple(b for b, _ in pairs), tuple(c for _, c in pairs))


# -- numbers ------------------------------------------------------------------------------------------------------

def percentile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated within its bucket; None without observations. One past
    the last finite bound is that bound (the histogram says no more), as histogram_quantile answers."""
    if buckets.total <= 0:
        return None
    rank = q * buckets.total
    lower, below = 0.0, 0.0  # the bucket's lower bound, and the observations under it
    for bound, count in zip(buckets.bounds, buckets.counts):
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def percentiles(now: Buckets, before: Buckets | None) -> Percentiles:
    recent = now.minus(before) if before is not None else Buckets()
    chosen, over = (recent, INTERVAL) if recent.total > 0 else (now, SINCE_START if now.total > 0 else NO_DATA)
    return Percentiles(percentile(chosen, 0.50), percentile(chosen, 0.95), percentile(chosen, 0.99), over)


def restarted(before: Snapshot, now: Snapshot) -> bool:
    """A counter went down, or the layers changed: another server run (or another server) answers now. (No layers
    before is a server still loading its model: its layers appearing is not a restart.)"""
    if before.layers and [layer for layer, _, _ in before.layers] != [layer for layer, _, _ in now.layers]:
        return True
    return any(b > n for b, n in zip(before.counters(), now.counters()))


def ratio(hits: float, lookups: float) -> float | None:
    return hits / lookups if lookups > 0 else None


def derive(before: Snapshot | None, now: Snapshot) -> View:
    """The view of `now`, with rates over the interval since `before` when it is of the same server run."""
    reset = before is not None and restarted(before, now)
    base = before if before is not None and not reset and now.at > before.at else None
    seconds = now.at - base.at if base is not None else None
    rates, over = _layer_rates(base, now)
    return View(
        now=now, seconds=seconds, restarted=reset, hit_rate=ratio(now.hits, now.lookups),
        hit_rate_interval=ratio(now.hits - base.hits, now.lookups - base.lookups) if base else None,
        bytes_read_per_s=(now.bytes_read - base.bytes_read) / seconds if base else None,
        read_latency=percentiles(now.read_latency, base.read_latency if base else None),
        step_latency=percentiles(now.step_latency, base.step_latency if base else None),
        layer_hit_rates=rates, layers_over=over)


def _layer_rates(base: Snapshot | None, now: Snapshot) -> tuple[tuple[tuple[int, float | None], ...], str]:
    """Per-layer hit rates over the interval when it had lookups, else since start."""
    if base is not None and now.lookups > base.lookups:
        deltas = [(layer, l1 - l0, h1 - h0) for (layer, l1, h1), (_, l0, h0) in zip(now.layers, base.layers)]
        return tuple((layer, ratio(h, n)) for layer, n, h in deltas), INTERVAL
    return tuple((layer, ratio(h, n)) for layer, n, h in now.layers), SINCE_START
