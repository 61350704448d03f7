"""Routed experts: tokens are grouped by expert with vectorised torch ops, then the layer's selected experts are
computed batch by batch in the order their weights become ready (hits first, then misses as reads complete).

Weights come from an `ExpertSource` (the streaming cache, or the memory-mapped file), so the MoE block and the
models never know where expert bytes live. Each (token, slot) pair's output is written to its own row and the k
rows of a token are summed at the end, so the result does not depend on the order in which experts arrive."""

from __future__ import annotations

from typing import Iterator, Protocol

import torch

from ..formats.weight import ExpertWeights
from ..kernels.dispatch import Compute


class ExpertSource(Protocol):
    def acquire(self, layer: int, experts: list[int]) -> Iterator[list[tuple[int, ExpertWeights]]]:
        """Yields batches of (index into `experts`, weights); a batch is valid until the next is requested."""
        ...


class ExpertRows:
    """The routed experts of one layer, one output row per (token, slot) pair, summed per token at the end; a kind
    (ExpertFFNs, layers/biased_experts.py's BiasedExpertFFNs) gives `layer` and `_compute(x, experts, index,
    offsets, pairs, w_flat, out, k)`, which fills the rows of experts[index[j]]. With expert sharding
    (engine/sharded.py), rank 0 sets `remote` and the other ranks' experts are computed there (`expert_rows`)."""

    layer: int
    remote = None  # shard/remote.py's RemoteExperts: other ranks' experts, computed there

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        # x: [T, D]; topk_ids, topk_weights: [T, k] -> [T, D]
        (T, D), k = x.shape, topk_ids.shape[1]
        experts, offsets, pairs = group_by_expert(topk_ids)
        out = torch.empty(T * k, D, dtype=torch.float32)  # one row per (token, slot); every row gets written
        w_flat = topk_weights.flatten().to(torch.float32)
        with_remote(self.remote, self.layer, experts, offsets, pairs, x, w_flat, k, out,
                    lambda local: self._compute(x, experts, local, offsets, pairs, w_flat, out, k))
        return out.view(T, k, D).sum(1)

    def expert_rows(self, experts: list[int], counts: list[int], x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """On the rank that owns `experts`: x [n, D] their rows grouped by expert (`counts` each, token order),
        w [n] the rows' routing weights -> [n, D] the weighted outputs, as __call__ computes them."""
        offsets, pairs = rows_layout(counts)
        out = torch.empty(x.shape[0], x.shape[1], dtype=torch.float32)
        self._compute(x, experts, list(range(len(experts))), offsets, pairs, w, out, 1)
        return out


class ExpertFFNs(ExpertRows):
    """Implements `RoutedExperts` for one layer."""

    def __init__(self, layer: int, source: ExpertSource, compute: Compute | None = None):
        self.layer, self.source, self.compute = layer, source, compute or Compute()

    def _compute(self, x, experts: list[int], index: list[int], offsets, pairs, w_flat, out, k: int) -> None:
        """experts[index[j]] for each j, computed here (the others are another rank's)."""
        if not index:
            return
        here = [experts[i] for i in index]  # batches index into `here`; index[j] is here[j]'s place in `experts`
        for batch in self.source.acquire(self.layer, here):
            for part in by_layout(batch):
                dest, sub_offsets = _batch_pairs([index[i] for i, _ in part], offsets, pairs)
                y = self.compute.moe_ffn(x[dest // k], [w for _, w in part], sub_offsets,
                                         torch.arange(len(dest), dtype=torch.int32), w_flat[dest])
                out[dest] = y


def with_remote(remote, layer: int, experts: list[int], offsets, pairs, x, w_flat, k: int, out: torch.Tensor,
                compute_here) -> None:
    """Fill `out` [T*k, D] (a row per (token, slot) pair): compute_here(indices into `experts`) for the experts
    this rank computes (all of them without sharding: remote None); the others' rows from their owner ranks
    (shard/remote.py), sent before and taken after, so both run at once."""
    local, pending = list(range(len(experts))), None
    if remote is not None:
        local, pending = remote.send(layer, experts, offsets, pairs, x, w_flat, k)
    try:
        compute_here(local)
    except BaseException:
        if pending is not None:
            pending.drain()  # the ranks' replies are still taken, so the message order holds
        raise
    for _, dest, rows in pending.wait() if pending is not None else ():
        out[dest] = rows


def rows_layout(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """An owner rank's request (rows grouped by expert, `counts` per expert) as group_by_expert's (offsets,
    pairs): offsets [n+1], pairs the identity (row r is pair r)."""
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(counts).cumsum(0)
    return offsets, torch.arange(int(offsets[-1]))


def by_layout(batch: list[tuple[int, ExpertWeights]]) -> list[list[tuple[int, ExpertWeights]]]:
    """The batch split by byte layout (a cache packs hot experts, so one batch may hold both), first-seen order:
    one kernel call takes one layout."""
    if all(not m.packed for _, e in batch for m in e) or all(m.packed for _, e in batch for m in e):
        return [batch]
    parts: dict[tuple[bool, ...], list] = {}
    for item in batch:
        parts.setdefault(tuple(m.packed for m in item[1]), []).append(item)
    return list(parts.values())


def group_by_expert(topk_ids: torch.Tensor):
    """-> (distinct expert ids, offsets [n+1], pair indices t*k+slot sorted by expert, stable by token)."""
    flat = topk_ids.flatten()
    order = torch.argsort(flat, stable=True)
    experts, counts = torch.unique_consecutive(flat[order], return_counts=True)
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    return experts.tolist(), offsets, order


def _batch_pairs(indices: list[int], offsets: torch.Tensor, pairs: torch.Tensor):
    """Pairs routed to the experts `indices` (in that order) and their offsets within the batch."""
    if len(indices) == len(offsets) - 1 and indices == sorted(indices):
        return pairs, offsets.to(torch.int32)
    spans = [pairs[offsets[i]:offsets[i + 1]] for i in indices]
    sub = torch.zeros(len(spans) + 1, dtype=torch.int32)
    sub[1:] = torch.tensor([len(s) for s in spans]).cumsum(0)
    return torch.cat(spans), sub
