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
        # expert sharding (shard_with): read ahead only this rank's experts, name the others' to their owners
        self.owned: dict[int, frozenset[int]] | None = None
        self.hint = None  # Callable[[layer, experts], None]
        self._ours: dict[int, dict[int, list[int]]] = {}  # routed layer -> {target layer: our experts to read}
        self._remote = None

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
        if self._remote is not None:
            self._remote.on_route = None
        self._x.clear()
        self._ours.clear()

    def _hook(self, layer: int):
        def see(x: torch.Tensor) -> None:
            self._x[layer] = x

        return see

    def shard_with(self, owned: dict[int, frozenset[int]], remote) -> None:
        """Expert sharding: `remote` (shard/remote.py's RemoteExperts) tells `route` each layer's whole routing
        before its rows go out; this rank reads only `owned` experts ahead."""
        self.owned, self.hint, self._remote = owned, remote.hint, remote
        remote.on_route = self.route

    def after_acquire(self, layer: int, experts: list[int]) -> None:
        """The cache has issued `layer`'s demand reads: read ahead for the layers after it."""
        if self.owned is not None:  # predicted at route(); our part waited for our demand reads
            for t, chosen in self._ours.pop(layer, {}).items():
                self.cache.prefetch(t, chosen)
            return
        for t, chosen in self._predict(layer, experts).items():
            self.cache.prefetch(t, chosen)

    def route(self, layer: int, experts: list[int]) -> None:
        """Expert sharding, before `layer`'s rows go to the other ranks: predict from the layer's whole routing,
        name each other rank its predicted experts now (it reads them ahead while it computes this layer: its
        reader puts its demand reads first), and keep ours for after our own demand reads, or read them now if
        this layer has none of ours (no acquire will come)."""
        self._ours.clear()
        ours = {}
        for t, chosen in self._predict(layer, experts).items():
            theirs = [e for e in chosen if e not in self.owned[t]]
            if theirs and self.hint is not None:
                self.hint(t, theirs)
            ours[t] = [e for e in chosen if e in self.owned[t]]
        if any(e in self.owned[layer] for e in experts):
            self._ours[layer] = ours
        else:
            for t, chosen in ours.items():
                self.cache.prefetch(t, chosen)

    def _predict(self, layer: int, experts: list[int]) -> dict[int, list[int]]:
        """-> {target layer: experts worth reading}, nearest target first (needed first, predicted best)."""
        x = self._x.pop(layer, None)
        if layer not in self.layers:
            return {}
        pos = self.layers.index(layer)
        targets = self.layers[pos + 1:pos + 1 + self.depth]
        ahead = None  # the predictor still sees the last layer's routing: history learns from it
        if self.predictor.uses_router and x is not None and targets:
            with torch.no_grad():
                ahead = router_lookahead(self.blocks, x, targets)
        scores = self.predictor.predict(layer, experts, ahead, targets)
        return {t: choose(scores[t], self.threshold, self.n_experts) for t in targets if t in scores}
