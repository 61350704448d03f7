"""Generation as a generator of events: prefill the prompt in chunks, then decode token by token.

Each event carries one new token id; the last one carries the finish reason and timing statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..layers.attention import Segment
from ..models.decoder import DecoderModel
from ..errors import ConfigError
from .kv_cache import KVCache
from .sampling import Sampler, SamplingParams

PREFILL_CHUNK = 512


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str | None = None

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        # the first generated token comes from the prefill logits, so decode steps = generated - 1
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class TokenEvent:
    token: int
    finish_reason: str | None = None  # "stop" (end-of-generation token), "length" (max tokens or context)
    stats: GenerationStats | None = None


@dataclass
class Sequence:
    """One sequence being generated: its token history and KV cache."""

    tokens: list[int]
    kv: KVCache
    stats: GenerationStats = field(default_factory=GenerationStats)


def new_sequence(model: DecoderModel, prompt: list[int], context_length: int) -> Sequence:
    a = model.args
    return Sequence(list(prompt), KVCache(a.n_layers, a.n_kv_heads, a.head_dim, context_length))


def forward_logits(model: DecoderModel, seq: Sequence, new_tokens: list[int]) -> torch.Tensor:
    """Run `new_tokens` through the model after what `seq.kv` holds; return logits of the last one ([V])."""
    start = seq.kv.length
    positions = torch.arange(start, start + len(new_tokens))
    hidden = model.forward(torch.tensor(new_tokens), [Segment(0, len(new_tokens), positions, seq.kv)])
    return model.logits(hidden[-1:])[0]


def prefill(model: DecoderModel, seq: Sequence, chunk: int = PREFILL_CHUNK) -> torch.Tensor:
    logits = None
    for i in range(0, len(seq.tokens), chunk):
        logits = forward_logits(model, seq, seq.tokens[i : i + chunk])
    return logits


@torch.inference_mode()
def generate(
    model: DecoderModel, prompt: list[int], params: SamplingParams, max_new_tokens: int,
    stop_ids: set[int] = frozenset(), context_length: int | None = None,
) -> Iterator[TokenEvent]:
    ctx = context_length or model.args.context_length
    if not prompt:
        raise ConfigError("cannot generate from an empty prompt")
    if len(prompt) >= ctx:
        raise ConfigError(f"the prompt has {len(prompt)} tokens but the context holds {ctx}; shorten it or raise --ctx-size")
    seq = new_sequence(model, prompt, ctx)
    sampler = Sampler(params)
    t0 = time.perf_counter()
    logits = prefill(model, seq)
    seq.stats.prompt_tokens, seq.stats.prefill_seconds = len(prompt), time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(max_new_tokens):
        token = sampler(logits, seq.tokens)
        seq.tokens.append(token)
        seq.stats.generated_tokens += 1
        reason = _finish_reason(token, i, max_new_tokens, len(seq.tokens), ctx, stop_ids)
        if reason:
            seq.stats.decode_seconds, seq.stats.finish_reason = time.perf_counter() - t0, reason
            yield TokenEvent(token, reason, seq.stats)
            return
        yield TokenEvent(token)
        logits = forward_logits(model, seq, [token])


def _finish_reason(token: int, i: int, max_new: int, n_tokens: int, ctx: int, stop_ids: set[int]) -> str | None:
    if token in stop_ids:
        return "stop"
    if i + 1 >= max_new or n_tokens >= ctx:
        return "length"
    return None
