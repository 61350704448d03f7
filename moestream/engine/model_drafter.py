"""Speculative decoding with a draft model (`--draft-model FILE`): a small GGUF with the target's vocabulary guesses
the next tokens greedily, and the target verifies them in one batched step (scheduler.py). The verify rule treats a
guess as a proposal with all its mass on one token (sampling.py `Sampler.verify`), so a deterministic draft keeps
the target's output exactly at temperature 0 and its distribution when sampling.

Each sequence's drafter keeps a KV cache of the draft model over the tokens it last saw: a proposal first cuts that
cache back to the longest prefix it shares with the sequence now (the target kept part of the last guesses, or
none), feeds the rest, then decodes up to `limit` guesses. Guessing backs off after rejections as the n-gram
drafter's does (drafting.py `AdaptiveLength`)."""

from __future__ import annotations

import torch

from ..models.decoder import DecoderModel
from .drafting import AdaptiveLength
from .sequence import forward_logits, new_sequence


class ModelDrafter(AdaptiveLength):
    def __init__(self, model: DecoderModel, max_length: int, context_length: int):
        super().__init__(max_length)
        self.model = model
        self.seq = new_sequence(model, [], context_length)
        self.cached: list[int] = []  # the tokens whose keys and values self.seq.kv holds, in order

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        limit = self.allowed(min(limit, self.seq.kv.max_len - len(tokens)))
        if limit <= 0 or not tokens:
            return []
        with torch.inference_mode():
            logits = self._catch_up(tokens)
            guesses: list[int] = []
            while True:
                guesses.append(int(torch.argmax(logits)))
                if len(guesses) == limit:
                    return guesses
                logits = self._feed([guesses[-1]])

    def _catch_up(self, tokens: list[int]) -> torch.Tensor:
        """Make the cache hold `tokens`; the logits after the last one."""
        keep = _common_prefix(self.cached, tokens)
        keep = min(keep, len(tokens) - 1)  # the last token is fed again: its logits are what we need
        self.seq.kv.truncate(keep)
        del self.cached[keep:]
        return self._feed(tokens[keep:])

    def _feed(self, new: list[int]) -> torch.Tensor:
        logits = forward_logits(self.model, self.seq, new)
        self.cached += new
        return logits


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
