"""SentencePiece-style tokenizer (`tokenizer.ggml.model == "llama"`), with llama.cpp's semantics.

The text (spaces already replaced by '▁') starts as one symbol per character. Repeatedly, the adjacent pair whose
concatenation is a vocabulary token with the best score is merged (ties: leftmost pair first), until no pair forms
a token. Each final symbol is its token, or, when it is a lone character missing from the vocabulary, that
character's UTF-8 bytes as `<0xXX>` byte tokens (falling back to a token equal to the byte itself, then to the
unknown token).

Symbols are kept as a doubly linked list over character positions, so a merge is O(1) and the heap holds candidate
pairs; a popped pair is stale when either side has changed since it was pushed (detected by length, since a
symbol only ever grows by absorbing its right neighbour).
"""

from __future__ import annotations

import heapq

from .vocab import Vocab

SPACE = "\u2581"  # '▁', SentencePiece's visible space


class SpmModel:
    def __init__(self, vocab: Vocab, unk_id: int | None):
        self.vocab = vocab
        self.unk_id = unk_id
        self._byte_ids = [self._find_byte_token(b) for b in range(256)]

    def tokenize(self, text: str) -> list[int]:
        """Token ids for already-escaped text (no special tokens, no space handling here)."""
        if not text:
            return []
        starts, lengths = _merge(text, self.vocab.token_to_id, self.vocab.scores)
        out: list[int] = []
        for start in starts:
            self._emit(text[start : start + lengths[start]], out)
        return out

    def _emit(self, piece: str, out: list[int]) -> None:
        token_id = self.vocab.token_to_id.get(piece)
        if token_id is not None:
            out.append(token_id)
            return
        # Only unmerged single characters get here: merged symbols are vocabulary tokens by construction.
        for byte in piece.encode("utf-8", "surrogateescape"):
            byte_id = self._byte_ids[byte]
            if byte_id is not None:
                out.append(byte_id)

    def _find_byte_token(self, byte: int) -> int | None:
        lookup = self.vocab.token_to_id
        for text in (f"<0x{byte:02X}>", chr(byte) if byte < 0x80 else None):
            if text is not None and text in lookup:
                return lookup[text]
        return self.unk_id


def _merge(text: str, token_to_id: dict[str, int], scores: list[float]) -> tuple[list[int], list[int]]:
    """Best-score-first pair merging. Returns the start positions of the final symbols (in order) and the
    per-position symbol lengths (valid at those starts)."""
    n = len(text)
    length = [1] * n
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    heap: list[tuple[float, int, int, int]] = []

    def push(left: int, right: int) -> None:
        if left < 0 or right < 0:
            return
        token_id = token_to_id.get(text[left : right + length[right]])
        if token_id is not None:
            # Min-heap on (-score, left): best score first, then leftmost, as llama.cpp's comparator.
            heapq.heappush(heap, (-scores[token_id], left, right, length[left] + length[right]))

    for i in range(1, n):
        push(i - 1, i)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
            continue  # stale: one side was merged away or has grown since this pair was queued
        length[left] += length[right]
        length[right] = 0
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        push(prev[left], left)
        push(left, nxt[left])
    starts = []
    i = 0
    while i != -1:
        starts.append(i)
        i = nxt[i]
    return starts, length
