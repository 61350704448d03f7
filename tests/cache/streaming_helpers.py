"""Shared by the streaming tests: run a model with a given expert source and collect exact logits."""

from __future__ import annotations

from pathlib import Path

import torch

from moestream.cache.config import CacheConfig
from moestream.cache.layout import SlotLayout
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.engine.loader import check_model, load_model
from moestream.formats.gguf import GGUFFile

PROMPT = [1, 17, 33, 5, 200, 31, 8, 99, 64, 12, 7, 150, 3, 41, 22, 90]  # long enough for multi-expert prefill


def slot_size(path: Path) -> int:
    return SlotLayout(check_model(GGUFFile(path)).experts).slot_size


def tight_budget(path: Path) -> int:
    """Exactly one layer's top-k experts: every lookup of a new layer misses."""
    info = check_model(GGUFFile(path))
    return info.args.n_experts_used * SlotLayout(info.experts).slot_size


@torch.inference_mode()
def greedy_logits(lm, n_decode: int = 6) -> list[torch.Tensor]:
    """Logits after the prompt and after each of n_decode greedy tokens."""
    seq = new_sequence(lm.model, PROMPT, len(PROMPT) + n_decode + 1)
    out = [forward_logits(lm.model, seq, PROMPT)]
    for _ in range(n_decode):
        token = int(out[-1].argmax())
        seq.tokens.append(token)
        out.append(forward_logits(lm.model, seq, [token]))
    return out


def run(path: Path, n_decode: int = 6, reader_object=None, **cache) -> tuple[list[torch.Tensor], object]:
    """cache: CacheConfig fields; reader_object: a Reader instance to use instead (fault injection)."""
    lm = load_model(path, progress=False, cache=CacheConfig(**cache), reader=reader_object)
    try:
        return greedy_logits(lm, n_decode), lm.cache
    finally:
        lm.close()
