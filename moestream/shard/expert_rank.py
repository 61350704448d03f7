"""An expert rank's loop: take a layer's rows from rank 0, run the experts this rank owns over them through its own
cache (and reader), send back the weighted rows; read ahead the experts rank 0's prefetcher names for it; answer
pings with its counters; leave on STOP.

The experts run as layers/experts.py runs them in one process (by_layout batches, the same `Compute.moe_ffn`, one
output row per (token, slot) pair), so each row is bit-identical to the one rank 0 would have computed. A message
that does not fit the plan (an expert this rank does not own, sizes that disagree) is a protocol error: the rank
stops with it rather than compute something else."""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist

from ..errors import ShardError
from . import wire


class ExpertRank:
    """ffns: MoE layer -> that layer's experts object, of the model's own kind (layers/experts.py's ExpertFFNs,
    layers/biased_experts.py's BiasedExpertFFNs), reading from this rank's cache: its expert_rows computes a
    request exactly as rank 0 would have."""

    def __init__(self, rank: int, cache, ffns: dict, owned: dict[int, frozenset[int]], n_experts: int, d_model: int,
                 timeout: float):
        self.rank, self.cache, self.ffns, self.owned = rank, cache, ffns, owned
        self.n_experts, self.d_model, self.timeout = n_experts, d_model, timeout
        self.counters = wire.RankCounters(budget_bytes=float(cache.pool.budget))

    def serve(self) -> None:
        """Until rank 0 says STOP; raises ShardError when rank 0 goes away or stops sending (the timeout)."""
        with torch.inference_mode():
            while True:
                h = torch.empty(wire.header_size(self.n_experts), dtype=torch.int64)
                self._recv(h, "a request")
                op, layer, experts, counts, rows = wire.parse_header(h, self.n_experts)
                if op == wire.STOP:
                    return
                if op == wire.PING:
                    self._send(self._counters(), "counters")
                elif op == wire.LAYER:
                    self._layer(layer, experts, counts, rows)
                elif op == wire.PREFETCH:
                    self._prefetch(layer, experts)
                else:
                    raise ShardError(f"rank {self.rank}: unknown request {op} from rank 0")

    def _layer(self, layer: int, experts: list[int], counts: list[int], rows: int) -> None:
        mine = self.owned.get(layer)
        if mine is None or rows < 0 or any(e not in mine for e in experts) or any(c < 1 for c in counts):
            raise ShardError(f"rank {self.rank}: rank 0 asked layer {layer} experts {experts}, which this rank's "
                             f"plan does not give it")
        payload = torch.empty(rows, self.d_model + 1, dtype=torch.float32)
        self._recv(payload, f"layer {layer}'s rows")
        t0 = time.perf_counter()
        out = self.compute_rows(layer, experts, counts, payload)
        self.counters.compute_seconds += time.perf_counter() - t0
        self.counters.requests += 1
        self._send(out, f"layer {layer}'s outputs")

    def _prefetch(self, layer: int, experts: list[int]) -> None:
        mine = self.owned.get(layer)
        if mine is None or any(e not in mine for e in experts):
            raise ShardError(f"rank {self.rank}: rank 0 named layer {layer} experts {experts} to read ahead, which "
                             f"this rank's plan does not give it")
        self.counters.hinted += len(experts)
        self.cache.prefetch(layer, experts)

    def compute_rows(self, layer: int, experts: list[int], counts: list[int], payload: torch.Tensor) -> torch.Tensor:
        """payload [n, D + 1] (rows grouped by expert, weight last) -> weighted outputs [n, D]."""
        x, w = payload[:, :self.d_model].contiguous(), payload[:, self.d_model].contiguous()
        return self.ffns[layer].expert_rows(experts, counts, x, w)

    def _counters(self) -> torch.Tensor:
        s, c = self.cache.stats, self.counters
        c.lookups, c.hits, c.bytes_read = float(s.lookups), float(s.hits), float(s.bytes_read)
        c.io_wait_seconds, c.cache_bytes = s.io_wait_seconds, float(self.cache.pool.allocated_bytes)
        c.prefetch_issued, c.prefetch_useful = float(s.prefetch_issued), float(s.prefetch_useful)
        return c.pack()

    def _recv(self, t: torch.Tensor, what: str) -> None:
        try:
            dist.recv(t, 0)
        except RuntimeError as exc:
            raise ShardError(f"rank {self.rank}: rank 0 went away while this rank waited for {what} "
                             f"({_why(exc, self.timeout)})") from None

    def _send(self, t: torch.Tensor, what: str) -> None:
        try:
            dist.send(t, 0)
        except RuntimeError as exc:
            raise ShardError(f"rank {self.rank}: could not send {what} to rank 0 ({_why(exc, self.timeout)})") from None


def _why(exc: RuntimeError, timeout: float) -> str:
    text = str(exc)
    if "Timed out" in text:
        return f"nothing for {timeout:g} s, the --shard-timeout"
    if "closed by peer" in text or "reset" in text:
        return "its connection closed"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def say(text: str) -> None:
    print(f"moestream: {text}", file=sys.stderr, flush=True)
