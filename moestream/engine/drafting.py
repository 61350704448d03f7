"""Draft tokens for speculative decoding: guesses of the next few tokens that one batched forward then verifies.

`ngram` is prompt-lookup decoding: where the last n tokens (n = MAX_NGRAM down to 1) occurred earlier in the
sequence, propose the tokens that followed that occurrence (the latest one). It costs no model and pays on text that
repeats what came before: code edits, quotes of a document being summarised, JSON echoing its input. On text that
repeats nothing it proposes nothing, and decoding runs as without it.

Each sequence gets its own NgramDrafter; `propose` is O(draft length) per step: an index maps every n-gram seen to
where its latest occurrence ended, and is extended by the tokens appended since the last call.

Guessing adapts to what the model keeps (`feedback`): verifying a guess is not free on a MoE model, since every
extra token of the step may route to experts the step would not otherwise read (on the 8-layer Mixtral-shaped file
nine tokens touch most of a layer's eight experts, one token two), so a sequence whose guesses keep failing costs
more than it saves (measured: 0.3-0.8x with 0-12 % kept, docs/benchmarks.md). After a fully kept draft the next may
be twice as long; after a partly kept one, one longer than what was kept; after a rejected one, the sequence stops
guessing for 2, 4, 8 ... (at most COOLDOWN_MAX) steps."""

from __future__ import annotations

from typing import Protocol

DRAFT_MODES = ("off", "ngram", "model")  # model: a small GGUF with the same vocabulary (engine/model_drafter.py)
DRAFT_TOKENS = 8  # most tokens proposed per step (the native layer steps take segments of up to 16)
MAX_NGRAM = 3
COOLDOWN_MAX = 32  # steps without guesses after repeated rejections, at most


class Drafter(Protocol):
    def propose(self, tokens: list[int], limit: int) -> list[int]:
        """At most `limit` guesses of the tokens that follow `tokens` (the whole sequence so far)."""
        ...

    def feedback(self, proposed: int, accepted: int) -> None:
        """How many of the last proposal's guesses the model kept."""
        ...


class AdaptiveLength:
    """The back-off both drafters share: how many guesses the next proposal may make (`allowed`), from `feedback`."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.length = max_length  # most guesses the next proposal may make
        self._cooldown = self._rejections = 0

    def allowed(self, limit: int) -> int:
        """Guesses to make now (0 while cooling down after rejections); counts this step of a cool-down."""
        if self._cooldown:
            self._cooldown -= 1
            return 0
        return max(0, min(limit, self.length))

    def feedback(self, proposed: int, accepted: int) -> None:
        if proposed == 0:
            return
        if accepted == 0:
            self._rejections += 1
            self._cooldown = min(COOLDOWN_MAX, 2 ** self._rejections)
            self.length = 1
            return
        self._rejections = 0
        self.length = min(self.max_length, 2 * proposed if accepted == proposed else accepted + 1)


class NgramDrafter(AdaptiveLength):
    def __init__(self, max_ngram: int = MAX_NGRAM, max_length: int = DRAFT_TOKENS):
        super().__init__(max_length)
        self.max_ngram = max_ngram
        self._ends: dict[tuple[int, ...], int] = {}  # n-gram -> index just after its latest occurrence
        self._indexed = 0  # tokens[:_indexed] have had every n-gram ending in them recorded

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        limit = self.allowed(limit)
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


def make_drafter(mode: str, max_length: int = DRAFT_TOKENS, model=None, context_length: int = 0) -> Drafter | None:
    """model: the draft DecoderModel for mode "model" (one per engine; each drafter keeps its own KV cache)."""
    if mode == "off":
        return None
    if mode == "ngram":
        return NgramDrafter(max_length=max_length)
    if mode == "model":
        if model is None:
            raise ValueError("draft mode 'model' needs a draft model")
        from .model_drafter import ModelDrafter

        return ModelDrafter(model, max_length, context_length)
    raise ValueError(f"unknown draft mode {mode!r}")
