"""Rank 0's routed experts that other ranks own: split a layer's routed experts by owner, send each owner the rows
of its experts in one message, and hand back the weighted rows to put in place.

Both expert paths use it the same way (layers/experts.py's ExpertFFNs and layers/moe_step.py's native step): they
group the (token, slot) pairs by expert (stable, so token order within an expert), call `send` before computing
their own experts, and `wait` after. The owner computes each expert over exactly the rows one process would have
(kernels are row-independent), so the logits are bit-identical to one process."""

from __future__ import annotations

import torch

from .link import Pending, ShardLink
from .plan import ShardPlan


class RemoteExperts:
    def __init__(self, plan: ShardPlan, link: ShardLink):
        self.plan, self.link = plan, link
        self.owners = {layer: torch.tensor(row) for layer, row in plan.owners.items()}
        self.on_route = None  # Callable[[layer, routed experts], None]: the prefetcher, before the rows go out

    def send(self, layer: int, experts: list[int], offsets: torch.Tensor, pairs: torch.Tensor, xn: torch.Tensor,
             weights: torch.Tensor, k: int) -> tuple[list[int], "RemoteRows | None"]:
        """experts: the layer's routed experts (ascending); offsets [n+1], pairs (t*k+slot grouped by expert): as
        layers/experts.py's group_by_expert; xn [T, D] the experts' input, weights [T*k] the pairs' weights.
        -> (indices into `experts` computed here, the exchange in flight or None)."""
        if self.on_route is not None:
            self.on_route(layer, experts)
        owner = self.owners[layer][torch.tensor(experts)].tolist()
        local = [i for i, r in enumerate(owner) if r == 0]
        if len(local) == len(experts):
            return local, None
        requests, groups = {}, {}
        for rank in sorted(set(owner) - {0}):
            idx = [i for i, r in enumerate(owner) if r == rank]
            dest = torch.cat([pairs[offsets[i]:offsets[i + 1]] for i in idx])
            payload = torch.cat([xn[dest // k], weights[dest].unsqueeze(1)], dim=1)
            counts = [int(offsets[i + 1] - offsets[i]) for i in idx]
            requests[rank] = ([experts[i] for i in idx], counts, payload)
            groups[rank] = (idx, dest)
        return local, RemoteRows(self.link.exchange(layer, requests), groups)


    def hint(self, layer: int, experts: list[int]) -> None:
        """The prefetcher expects `layer` to route to `experts` (none of them rank 0's): each owner reads its own
        ahead (one PREFETCH message per owner)."""
        owner = self.owners[layer][torch.tensor(experts)].tolist() if experts else []
        for rank in sorted(set(owner) - {0}):
            self.link.hint(rank, layer, [e for e, r in zip(experts, owner) if r == rank])


class RemoteRows:
    """The exchange of one layer: wait() -> [(indices into the routed experts, pairs, weighted rows [n, D])]."""

    def __init__(self, pending: Pending, groups: dict[int, tuple[list[int], torch.Tensor]]):
        self.pending, self.groups = pending, groups

    def wait(self) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
        return [(*self.groups[rank], rows) for rank, rows in self.pending.wait()]

    def drain(self) -> None:
        """The local experts failed: still take the replies (the ranks' message order must hold), then let go."""
        try:
            self.pending.wait()
        except Exception:
            pass  # the local failure is the one to report
