"""Which rank owns which routed expert: every (MoE layer, expert) exactly one owner among `world` ranks.

Automatic plans are greedy longest-processing-time: experts in falling order of load go one by one to the rank
with the least load so far (ties: fewer bytes, then the lower rank). The load is an expert's bytes, or with a
routing profile (a --stats-json file's routing_counts) its routed count, so the hot experts spread and each rank
serves about the same share of lookups. Pure: no I/O, no torch; every rank computes its plan itself and the ranks
compare digests at start (shard/setup.py), so two ranks that disagree are refused rather than silently wrong."""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ShardPlan:
    world: int
    owners: dict[int, tuple[int, ...]]  # MoE layer -> the owning rank of each of its experts
    basis: str = "bytes"  # what the plan balanced: "bytes", "profile" or "file"

    def owned(self, rank: int) -> dict[int, frozenset[int]]:
        """layer -> the experts `rank` owns there."""
        return {layer: frozenset(e for e, r in enumerate(row) if r == rank) for layer, row in self.owners.items()}

    def count(self, rank: int) -> int:
        return sum(row.count(rank) for row in self.owners.values())

    def digest(self) -> str:
        text = json.dumps({"world": self.world, "owners": {str(k): v for k, v in sorted(self.owners.items())}})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {"world": self.world, "owners": {str(layer): list(row) for layer, row in sorted(self.owners.items())}}


def balanced_plan(layers: tuple[int, ...], n_experts: int, world: int, expert_bytes,
                  profile: list[list[int]] | None = None) -> ShardPlan:
    """expert_bytes(layer, expert) -> bytes; profile: routing counts [layer][expert] (layers of the model)."""
    if world < 1:
        raise ConfigError(f"a shard plan needs at least one rank, got {world}")
    loads = {}
    for layer in layers:
        for e in range(n_experts):
            size = expert_bytes(layer, e)
            hot = _count(profile, layer, e) if profile is not None else size
            loads[(layer, e)] = (hot, size)
    ranks = [(0, 0, r) for r in range(world)]  # (load, bytes, rank): a heap, least loaded first
    owners = {layer: [0] * n_experts for layer in layers}
    for (layer, e), (hot, size) in sorted(loads.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0])):
        load, nbytes, rank = heapq.heappop(ranks)
        owners[layer][e] = rank
        heapq.heappush(ranks, (load + hot, nbytes + size, rank))
    return ShardPlan(world, {layer: tuple(row) for layer, row in owners.items()},
                     "profile" if profile is not None else "bytes")


def _count(profile: list[list[int]], layer: int, expert: int) -> int:
    row = profile[layer] if layer < len(profile) else []
    return int(row[expert]) + 1 if expert < len(row) else 1  # +1: an expert never seen still takes a slot


def plan_from_json(data, layers: tuple[int, ...], n_experts: int, world: int, where: str) -> ShardPlan:
    """A plan file: {"owners": {"<layer>": [rank of expert 0, rank of expert 1, ...], ...}}; checked whole."""
    owners = data.get("owners") if isinstance(data, dict) else None
    if not isinstance(owners, dict):
        raise ConfigError(f"{where}: a shard plan is a JSON object with \"owners\": {{\"<layer>\": [ranks...]}}")
    rows: dict[int, tuple[int, ...]] = {}
    for key, row in owners.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) in layers):
            raise ConfigError(f"{where}: layer {key!r} has no routed experts (MoE layers: {_span(layers)})")
        if not isinstance(row, list):
            raise ConfigError(f"{where}: layer {key} must list an owner rank per expert, got {type(row).__name__}")
        rows[int(key)] = tuple(row)
    check_owners(rows, layers, n_experts, world, where)
    return ShardPlan(world, rows, "file")


def check_owners(owners: dict[int, tuple], layers: tuple[int, ...], n_experts: int, world: int, where: str) -> None:
    """Every expert of every MoE layer has exactly one owner, a rank in 0..world-1."""
    for layer in layers:
        row = owners.get(layer)
        if row is None:
            raise ConfigError(f"{where}: layer {layer}'s {n_experts} experts have no owner")
        for e in range(n_experts):
            if e >= len(row) or row[e] is None:
                raise ConfigError(f"{where}: layer {layer} expert {e} has no owner")
            rank = row[e]
            if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
                raise ConfigError(f"{where}: layer {layer} expert {e} is owned by {rank!r}, not a rank of 0..{world - 1}")
        if len(row) > n_experts:
            raise ConfigError(f"{where}: layer {layer} lists {len(row)} owners for {n_experts} experts")


def _span(layers: tuple[int, ...]) -> str:
    return f"{layers[0]}..{layers[-1]}" if layers else "none"
