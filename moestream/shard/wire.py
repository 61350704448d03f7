"""The messages between rank 0 and an expert rank, over torch.distributed point-to-point (gloo on CPUs).

Rank 0 sends a request as a fixed-size header and, for a layer, one payload; the rank answers with one tensor:
  header   int64 [4 + 2E]: op, layer, n experts in the request, n rows, then the n expert ids and their row counts
  payload  float32 [rows, D + 1]: the normed hidden state of each routed (token, slot) pair, grouped by expert in
           the order of the ids, token order within an expert; the last column is the pair's routing weight
  reply    LAYER: float32 [rows, D], each pair's weighted expert output, same order
           PING:  float64 [STAT_FIELDS], the rank's cumulative counters (RankCounters)
           STOP:  no reply; the rank leaves its loop
           PREFETCH: no payload, no reply: rank 0's prefetcher predicts the header's experts (all this rank's) for
           the header's layer; the rank reads them ahead into its cache (counts are zeros)
One header and one payload per rank per layer (never one per expert); every call waits at most the group's
timeout, so a dead or stalled peer ends in an error, never a hang."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

LAYER, PING, STOP, PREFETCH = 1, 2, 3, 4


def header_size(n_experts: int) -> int:
    return 4 + 2 * n_experts


def header(op: int, n_experts: int, layer: int = -1, experts: list[int] = (), counts: list[int] = ()) -> torch.Tensor:
    h = torch.zeros(header_size(n_experts), dtype=torch.int64)
    n = len(experts)
    h[0], h[1], h[2], h[3] = op, layer, n, sum(counts)
    if n:
        h[4:4 + n] = torch.tensor(experts, dtype=torch.int64)
        h[4 + n_experts:4 + n_experts + n] = torch.tensor(counts, dtype=torch.int64)
    return h


def parse_header(h: torch.Tensor, n_experts: int) -> tuple[int, int, list[int], list[int], int]:
    """-> (op, layer, expert ids, row counts, rows)."""
    op, layer, n, rows = (int(v) for v in h[:4])
    if not 0 <= n <= n_experts:
        return op, layer, [], [], -1
    return op, layer, h[4:4 + n].tolist(), h[4 + n_experts:4 + n_experts + n].tolist(), rows


@dataclass
class RankCounters:
    """What an expert rank reports when pinged (cumulative since it started)."""

    lookups: float = 0.0
    hits: float = 0.0
    bytes_read: float = 0.0
    compute_seconds: float = 0.0  # expert FFNs, including the time blocked on reads
    io_wait_seconds: float = 0.0
    cache_bytes: float = 0.0
    budget_bytes: float = 0.0
    requests: float = 0.0  # layer requests served
    hinted: float = 0.0  # experts rank 0's prefetcher named for this rank (PREFETCH messages)
    prefetch_issued: float = 0.0  # reads ahead this rank's cache started
    prefetch_useful: float = 0.0  # ... whose expert was then asked for

    def pack(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def unpack(cls, t: torch.Tensor) -> "RankCounters":
        return cls(*t.tolist())

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


STAT_FIELDS = len(fields(RankCounters))
