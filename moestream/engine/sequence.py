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
    heads, k_dim, v_dim = model.kv_dims
    return Sequence(list(prompt), KVCache(model.args.n_layers, heads, k_dim, context_length, v_dim=v_dim))


def forward(model: DecoderModel, feeds: list[tuple[KVCache, list[int]]], wanted: list[int],
            counts: list[int] | None = None) -> torch.Tensor:
    """One forward pass over every (kv, new tokens) feed, each placed after what its kv holds; logits
    [sum(counts), V] of the last counts[j] new tokens (default 1) of each feed index wanted[j], in order (empty when
    none is wanted). Several rows of one feed: a speculative step verifying its draft."""
    tokens, segments, start = [], [], 0
    for kv, new in feeds:
        tokens += new
        segments.append(Segment(start, len(new), torch.arange(kv.length, kv.length + len(new)), kv))
        start += len(new)
    hidden = model.forward(torch.tensor(tokens), segments)  # [T, D]
    if not wanted:
        return hidden.new_empty(0, model.vocab_size)
    counts = counts or [1] * len(wanted)
    ends = [segments[i].start + segments[i].length for i in wanted]
    return model.logits(hidden[[r for end, c in zip(ends, counts) for r in range(end - c, end)]])


def forward_logits(model: DecoderModel, seq: Sequence, new_tokens: list[int]) -> torch.Tensor:
    """Run `new_tokens` through the model after what `seq.kv` holds; logits of the last one ([V])."""
    return forward(model, [(seq.kv, new_tokens)], [0])[0]
