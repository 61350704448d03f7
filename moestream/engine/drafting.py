"""Draft tokens for speculative decoding: guesses of the next few tokens that one batched forward then verifies.

`ngram` is prompt-lookup decoding: where the last n tokens (n = MAX_NGRAM down to 1) occurred earlier in the
sequence, propose the tokens that followed that occurrence (the latest one). It costs no model and pays on text that
repeats what came before: code edits, quotes of a document being summarised, JSON echoing its input. On text that
repeats nothing it proposes nothing, and decoding runs as without it.

Each sequence gets its own NgramDrafter; `propose` is O(draft length) per step: an index maps every n-gram seen to
where its latest occurrence ended, and is extended by the tokens appended since the last call."""

from __future__ import annotations

from typing import Protocol

DRAFT_MODES = ("off", "ngram")
DRAFT_TOKENS = 8  # most tokens proposed per step (the native layer steps take segments of up to 16)
MAX_NGRAM = 3


class Drafter(Protocol):
    def propose(self, tokens: list[int], limit: int) -> list[int]:
        """At most `limit` guesses of the tokens that follow `tokens` (the whole sequence so far)."""
        ...


class NgramDrafter:
    def __init__(self, max_ngram: int = MAX_NGRAM):
        self.max_ngram = max_ngram
        self._ends: dict[tuple[int, ...], int] = {}  # n-gram -> index just after its latest occurrence
        self._indexed = 0  # tokens[:_indexed] have had every n-gram ending in them recorded

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        if limit <= 0 or len(tokens) < 2:
            return []
        self._index(tokens, len(tokens) - 1)  # everything but the newest token, so its own n-grams don't match
        for n in range(min(self.max_ngram, len(tokens) - 1), 0, -1):
            end = self._ends.get(tuple(tokens[-n:]))
            if end is not None:
                self._index(tokens, len(tokens))
                return tokens[end:end + limit]
        self._index(tokens, len(tokens))
        return []

    def _index(self, tokens: list[int], upto: int) -> None:
        if upto < self._indexed:  # the sequence was cut back (cannot happen in the scheduler): start again
            self._ends.clear()
            self._indexed = 0
        for i in range(self._indexed, upto):
            for n in range(1, min(self.max_ngram, i + 1) + 1):
                self._ends[tuple(tokens[i + 1 - n:i + 1])] = i + 1
        self._indexed = max(self._indexed, upto)


def make_drafter(mode: str) -> Drafter | None:
    if mode == "off":
        return None
    if mode == "ngram":
        return NgramDrafter()
    raise ValueError(f"unknown draft mode {mode!r}")
