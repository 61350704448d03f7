"""Expert predictors behind one interface. When layer L has routed, a predictor scores, for each target layer
L+1 .. L+depth, how likely its next acquire is to include each expert: a score in [0, 1] per expert. The
prefetcher reads ahead the experts scoring at least a threshold; the cache keeps the ones already resident.

- `lookahead` (Eliseev & Mazur 2023): layer L+d's norm and router applied to layer L's residual stream.
- `history`: per-layer transition statistics learned online (MER's first-order chain, across layers): how often
  layer L+d used expert e' in the same step as layer L used e.
- `combined`: their mean.

Predictors see the lookahead's router probabilities as input rather than hidden states, so the same objects run
live (the prefetcher computes them) and offline on a trace that recorded them (`moestream trace --ahead D`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

Ahead = dict[int, torch.Tensor]  # target layer -> router probabilities [T, E] from layer L's residual stream
Scores = dict[int, torch.Tensor]  # target layer -> [E] estimated chance its next acquire includes each expert

PRIOR_WEIGHT = 2.0  # history starts from the base rate k/E as if it had seen this many steps of it


class Predictor(Protocol):
    name: str
    uses_router: bool  # needs `ahead` (the lookahead router probabilities)

    def predict(self, layer: int, experts: list[int], ahead: Ahead | None, targets: list[int]) -> Scores:
        """Layer `layer` just routed to `experts` (distinct ids of the step); scores for each of `targets`."""
        ...


class Lookahead:
    """Each token's top-k under the target's router, as a chance min(1, k*p); the step uses an expert if any of
    its tokens does: 1 - prod(1 - chance)."""

    name, uses_router = "lookahead", True

    def __init__(self, k: int):
        self.k = k

    def predict(self, layer: int, experts: list[int], ahead: Ahead | None, targets: list[int]) -> Scores:
        return {t: token_union(ahead[t], self.k) for t in targets if ahead and t in ahead}


def token_union(probs: torch.Tensor, k: int) -> torch.Tensor:
    """[T, E] router probabilities -> [E] chance that at least one token routes to each expert."""
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    chance = torch.zeros_like(probs).scatter_(-1, top.indices, (top.values * k).clamp(max=1.0))
    return 1.0 - torch.prod(1.0 - chance, dim=0)


class History:
    """Counts, per layer pair (L, L+d), how often expert e' of L+d was used in a step where L used e; scores a
    target by the mean of those frequencies over the experts L used now. Learns from every step it sees; until
    it has seen a few, the base rate k/E (a weak prior) dominates."""

    name, uses_router = "history", False

    def __init__(self, n_layers: int, n_experts: int, k: int, depth: int):
        # numpy, not torch: these are a few tiny updates per layer and token, where torch's per-call overhead
        # (~10 us) would add tens of ms per decoded token on a 32-layer model
        self.depth, self.base = depth, k / n_experts
        self.pair = np.zeros((n_layers, depth, n_experts, n_experts), np.float32)  # [L, d-1, e, e'] co-use counts
        self.seen = np.zeros((n_layers, depth, n_experts), np.float32)  # [L, d-1, e] L used e and L+d routed
        self._recent: dict[int, np.ndarray] = {}  # layer -> experts of its latest acquire

    def predict(self, layer: int, experts: list[int], ahead: Ahead | None, targets: list[int]) -> Scores:
        src = np.asarray(experts, dtype=np.int64)
        self._learn(layer, src)
        out = {}
        for t in targets:
            d = t - layer
            if 1 <= d <= self.depth and len(src):
                seen = self.seen[layer, d - 1, src, None] + PRIOR_WEIGHT  # [S, 1]
                freq = (self.pair[layer, d - 1, src] + PRIOR_WEIGHT * self.base) / seen  # [S, E]
                out[t] = torch.from_numpy(freq.mean(axis=0))
        return out

    def _learn(self, layer: int, now: np.ndarray) -> None:
        """This step's `layer` used `now`: credit each earlier layer within reach that routed this step."""
        if layer <= min(self._recent, default=layer):  # a new step (decode wraps back to the first MoE layer)
            self._recent.clear()
        for src_layer, src in self._recent.items():
            d = layer - src_layer
            if 1 <= d <= self.depth:
                self.pair[src_layer, d - 1, src[:, None], now[None, :]] += 1  # distinct ids: no repeated cell
                self.seen[src_layer, d - 1, src] += 1
        self._recent[layer] = now


class Combined:
    """The mean of lookahead and history (lookahead alone for a target history does not reach)."""

    name, uses_router = "combined", True

    def __init__(self, lookahead: Lookahead, history: History):
        self.lookahead, self.history = lookahead, history

    def predict(self, layer: int, experts: list[int], ahead: Ahead | None, targets: list[int]) -> Scores:
        la = self.lookahead.predict(layer, experts, ahead, targets)
        hi = self.history.predict(layer, experts, ahead, targets)
        return {t: (la[t] + hi[t]) / 2 if t in hi else la[t] for t in la}


PREDICTORS = ("lookahead", "history", "combined")
# a threshold of 0 reads every expert a predictor scores above zero: for lookahead that is each token's top-k; history
# and combined give every expert at least a share of the base rate k/E, so they need a real threshold
DEFAULT_THRESHOLDS = {"lookahead": 0.0, "history": 0.4, "combined": 0.3}


def make_predictor(name: str, n_layers: int, n_experts: int, k: int, depth: int) -> Predictor:
    from ..errors import ConfigError

    if name == "lookahead":
        return Lookahead(k)
    if name == "history":
        return History(n_layers, n_experts, k, depth)
    if name == "combined":
        return Combined(Lookahead(k), History(n_layers, n_experts, k, depth))
    raise ConfigError(f"unknown predictor {name!r}; choose one of {', '.join(PREDICTORS)}")


def choose(scores: torch.Tensor, threshold: float, limit: int) -> list[int]:
    """Experts scoring above zero and at least `threshold`, most likely first, at most `limit`."""
    vals = scores.tolist()
    order = sorted(range(len(vals)), key=lambda e: -vals[e])[:limit]  # stable: lower ids first among ties
    return [e for e in order if vals[e] > 0 and vals[e] >= threshold]
