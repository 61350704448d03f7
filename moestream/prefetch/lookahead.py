"""The lookahead predictor (Eliseev & Mazur, "Fast Inference of Mixture-of-Experts Language Models with
Offloading", 2023): the residual stream changes little from one layer to the next, so layer L+1's router applied
to layer L's hidden state already names most of the experts L+1 will pick. Run while layer L computes, it gives
the reader a layer's worth of time to fetch them."""

from __future__ import annotations

import torch


class Lookahead:
    """Layer L+1's RMSNorm and router on layer L's residual stream [T, D] -> the experts L+1 is likely to use:
    each token's top `k` (the router's own k), united over the tokens of the step."""

    def __init__(self, next_norm, next_gate, k: int):
        self.next_norm, self.next_gate, self.k = next_norm, next_gate, k

    def predict(self, x: torch.Tensor) -> list[int]:
        logits = self.next_gate(self.next_norm(x))  # [T, E]
        return torch.unique(logits.topk(self.k, dim=-1).indices).tolist()


class PrefetchHook:
    """Called by decoder block L with its residual stream after attention: asks the cache to read ahead what
    the predictor expects layer L+1 to need."""

    def __init__(self, predictor: Lookahead, cache, next_layer: int):
        self.predictor, self.cache, self.next_layer = predictor, cache, next_layer

    def __call__(self, x: torch.Tensor) -> None:
        self.cache.prefetch(self.next_layer, self.predictor.predict(x))


def install_lookahead(model, cache) -> int:
    """Hook every block whose successor routes experts; returns how many were hooked."""
    hooked = 0
    for i, (block, nxt) in enumerate(zip(model.blocks, model.blocks[1:])):
        router = getattr(nxt.ffn, "router", None)
        if router is not None:
            block.lookahead = PrefetchHook(Lookahead(nxt.ffn_norm, router.gate_inp, router.k), cache, i + 1)
            hooked += 1
    return hooked
