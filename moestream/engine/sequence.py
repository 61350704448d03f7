"""One sequence (its token history and KV cache) and the one forward pass over several sequences' new tokens.

`forward` is the only place that turns token lists into a model call: the scheduler's step feeds it every running
sequence at once, and `forward_logits` (one sequence, no sampling) is what logit-level checks use, so a parity
test and a served request run the same code. Positions come from what each KV cache already holds, so a caller
cannot feed a token at a position its cache disagrees with. Logits are computed only for the rows asked for: the
lm_head is a [V, D] product, and over a 512-token prefill chunk the other 511 rows would be thrown away."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers.attention import Segment
from ..models.decoder import DecoderModel
from .kv_cache import KVCache


@dataclass
class Sequence:
    """One sequence being generated: its token history (prompt + generated) and KV cache."""

    tokens: list[int]
    kv: KVCache


def new_sequence(model: DecoderModel, prompt: list[int], context_length: int) -> Sequence:
    a = model.args
    return Sequence(list(prompt), KVCache(a.n_layers, a.n_kv_heads, a.head_dim, context_length))


def forward(model: DecoderModel, feeds: list[tuple[KVCache, list[int]]], wanted: list[int]) -> torch.Tensor:
    """One forward pass over every (kv, new tokens) feed, each placed after what its kv holds; logits
    [len(wanted), V] of the last new token of each feed index in `wanted` (empty when none is wanted)."""
    tokens, segments, start = [], [], 0
    for kv, new in feeds:
        tokens += new
        segments.append(Segment(start, len(new), torch.arange(kv.length, kv.length + len(new)), kv))
        start += len(new)
    hidden = model.forward(torch.tensor(tokens), segments)  # [T, D]
    if not wanted:
        return hidden.new_empty(0, model.vocab_size)
    return model.logits(hidden[[segments[i].start + segments[i].length - 1 for i in wanted]])


def forward_logits(model: DecoderModel, seq: Sequence, new_tokens: list[int]) -> torch.Tensor:
    """Run `new_tokens` through the model after what `seq.kv` holds; logits of the last one ([V])."""
    return forward(model, [(seq.kv, new_tokens)], [0])[0]
