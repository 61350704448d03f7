"""The prefetcher: wires a predictor between the model and the expert cache.

Each decoder block hands the prefetcher its residual stream after attention (`Block.lookahead`); when the block's
MoE layer has routed and the cache has issued that layer's demand reads (`ExpertCache.on_acquire`), the predictor
scores the next `depth` layers and the cache reads ahead the likely experts at background priority. Issuing after
the demand reads keeps every demand read ahead of the prefetches in the reader's queue.

The lookahead input (Eliseev & Mazur, "Fast Inference of Mixture-of-Experts Language Models with Offloading",
2023): the residual stream changes little from one layer to the next, so layer L+d's norm and router applied to
layer L's residual already name most of the experts L+d will pick."""

from __future__ import annotations

import torch

from .predictors import Ahead, Predictor, choose


def router_lookahead(blocks, x: torch.Tensor, targets: list[int]) -> Ahead:
    """x: [T, D] a layer's residual stream -> {target: [T, E] the target router's probabilities on it}."""
    out = {}
    for t in targets:
        out[t] = blocks[t].ffn.router.selection_probs(blocks[t].ffn_norm(x))  # [T, E]
    return out


def moe_layers(model) -> list[int]:
    return [i for i, b in enumerate(model.blocks) if getattr(b.ffn, "router", None) is not None]


class Prefetcher:
    """threshold: least score an expert needs to be read ahead; depth: how many MoE layers ahead to look."""

    def __init__(self, model, cache, predictor: Predictor, depth: int, threshold: float):
        self.blocks, self.cache, self.predictor = model.blocks, cache, predictor  # blocks: the model's, hooked
        self.depth, self.threshold = depth, threshold
        self.layers = moe_layers(model)
        self.n_experts = cache.store.n_experts
        self._x: dict[int, torch.Tensor] = {}  # layer -> its residual stream this step, until it routes
        self.owned: dict[int, frozenset[int]] | None = None  # expert sharding: read ahead only this rank's experts
        self.hint = None  # expert sharding: Callable[[layer, experts], None] naming the others' to their owners

    def install(self) -> None:
        for i in self.layers:
            self.blocks[i].lookahead = self._hook(i)
        self.cache.on_acquire = self.after_acquire
        self.cache.prefetcher = f"{self.predictor.name}, depth {self.depth}, threshold {self.threshold:g}"

    def uninstall(self) -> None:
        """Unhook from the model and the cache (prefetch turned off or reconfigured in a running server)."""
        for i in self.layers:
            self.blocks[i].lookahead = None
        self.cache.on_acquire, self.cache.prefetcher = None, ""
        self._x.clear()

    def _hook(self, layer: int):
        def see(x: torch.Tensor) -> None:
            self._x[layer] = x

        return see

    def after_acquire(self, layer: int, experts: list[int]) -> None:
        """The cache has issued `layer`'s demand reads: read ahead for the layers after it."""
        x = self._x.pop(layer, None)
        if layer not in self.layers:
            return
        pos = self.layers.index(layer)
        targets = self.layers[pos + 1:pos + 1 + self.depth]
        ahead = None  # the predictor still sees the last layer's routing: history learns from it
        if self.predictor.uses_router and x is not None and targets:
            with torch.no_grad():
                ahead = router_lookahead(self.blocks, x, targets)
        scores = self.predictor.predict(layer, experts, ahead, targets)
        for t in targets:  # nearest first: it is needed first and predicted best
            if t in scores:
                chosen = choose(scores[t], self.threshold, self.n_experts)
                if self.owned is not None:
                    theirs = [e for e in chosen if e not in self.owned[t]]
                    if theirs and self.hint is not None:
                        self.hint(t, theirs)
                    chosen = [e for e in chosen if e in self.owned[t]]
                self.cache.prefetch(t, chosen)
