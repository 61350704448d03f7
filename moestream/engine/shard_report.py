"""The run summary's per-rank part of an expert-sharded run: each rank's experts, hit rate, bytes read, expert
compute time, and (for the other ranks, as rank 0 sees them) the time an exchange took and the part of it that was
neither the remote experts' compute nor overlapped by rank 0's own: the network's share."""

from __future__ import annotations

from ..errors import ShardError


def shard_summary(sharding, cache=None, refresh: bool = True) -> dict:
    """{} without sharding; else {"shard_world", "shard_plan", "shard_ranks": [per rank], "shard_fault"}: rank 0's
    counters from its cache, the others' as last reported (a heartbeat refreshes them every second; `refresh`
    pings first, for an up-to-date run summary)."""
    if sharding is None:
        return {}
    link = sharding.link
    if refresh and link is not None and link.fault is None:
        try:
            link.ping()
        except ShardError:
            pass  # the fault is reported below
    ranks = [{"rank": 0, "experts": sharding.plan.count(0), **_own(cache)}]
    for rank, t in (link.traffic.items() if link is not None else ()):
        r = t.remote
        network = max(0.0, t.exchange_seconds - r.compute_seconds)
        ranks.append({
            "rank": rank, "experts": sharding.plan.count(rank), "lookups": int(r.lookups), "hits": int(r.hits),
            "hit_rate": r.hit_rate, "bytes_read": int(r.bytes_read), "compute_seconds": r.compute_seconds,
            "io_wait_seconds": r.io_wait_seconds, "cache_bytes": int(r.cache_bytes),
            "budget_bytes": int(r.budget_bytes), "prefetch_hinted": int(r.hinted),
            "prefetch_issued": int(r.prefetch_issued), "prefetch_useful": int(r.prefetch_useful),
            "exchanges": t.exchanges, "rows": t.rows, "bytes_sent": t.bytes_sent, "bytes_received": t.bytes_received,
            "exchange_seconds": t.exchange_seconds, "waited_seconds": t.waited_seconds, "network_seconds": network,
        })
    return {"shard_world": sharding.place.world, "shard_plan": sharding.plan.basis, "shard_ranks": ranks,
            "shard_fault": link.fault if link is not None else None}


def _own(cache) -> dict:
    """Rank 0's own cache counters, in the per-rank shape."""
    s = cache.stats if cache is not None else None
    return {} if s is None else {"lookups": s.lookups, "hits": s.hits, "hit_rate": s.hit_rate,
                                 "bytes_read": s.bytes_read, "io_wait_seconds": s.io_wait_seconds,
                                 "prefetch_issued": s.prefetch_issued, "prefetch_useful": s.prefetch_useful}
