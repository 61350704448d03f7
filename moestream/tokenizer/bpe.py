"""Byte-level BPE (`tokenizer.ggml.model == "gpt2"`), with llama.cpp's semantics.

Text is cut into pre-tokens by the pre-tokenizer regexes; each pre-token's UTF-8 bytes are mapped to GPT-2's
printable stand-in characters (so that vocabulary entries are valid strings); then the adjacent pair with the
lowest merge rank is merged (ties: leftmost first) until no ranked pair remains. Each final symbol is its token;
a symbol missing from the vocabulary falls back to one token per character, and characters without a token are
dropped, as llama.cpp does. Results are cached per pre-token: natural text repeats words constantly.
"""

from __future__ import annotations

import heapq
from functools import lru_cache

import regex

from . import pretokenize
from .vocab import Vocab

_CACHE_LIMIT = 100_000  # pre-tokens; the cache is simply cleared when full


@lru_cache(maxsize=1)
def byte_to_unicode() -> tuple[str, ...]:
    """GPT-2's byte -> character table: printable Latin-1 bytes map to themselves, the other 68 bytes (controls,
    space, DEL, NBSP, soft hyphen) to U+0100 upwards in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {ch: b for b, ch in enumerate(byte_to_unicode())}


class BpeModel:
    def __init__(self, vocab: Vocab, merges: list[str], pre: str | None):
        self.vocab = vocab
        self.ranks = _parse_merges(merges)
        self.pre_tokenizer = pretokenize.pre_tokenizer(pre)
        self.patterns: list[regex.Pattern] = self.pre_tokenizer.compile()
        self._cache: dict[str, tuple[int, ...]] = {}
        self._byte_chars = byte_to_unicode()

    def tokenize(self, text: str) -> list[int]:
        out: list[int] = []
        for word in pretokenize.split(text, self.patterns):
            ids = self._cache.get(word)
            if ids is None:
                ids = self._word_ids(self._byte_encode(word))
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[word] = ids
            out.extend(ids)
        return out

    def _byte_encode(self, word: str) -> str:
        chars = self._byte_chars
        return "".join(chars[b] for b in word.encode("utf-8", "surrogateescape"))

    def _word_ids(self, word: str) -> tuple[int, ...]:
        lookup = self.vocab.token_to_id
        if self.pre_tokenizer.ignore_merges and word in lookup:
            return (lookup[word],)
        ids: list[int] = []
        for symbol in _merge(word, self.ranks):
            token_id = lookup.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:
                # Per-character fallback. llama.cpp looks up each UTF-8 byte as a one-byte string, which can only
                # find ASCII characters; looking up whole characters agrees there and also keeps non-ASCII ones.
                ids.extend(lookup[ch] for ch in symbol if ch in lookup)
        return tuple(ids)


def _parse_merges(merges: list[str]) -> dict[tuple[str, str], int]:
    """`"left right"` lines -> rank. The split is at the first space after the first character, so a merge whose
    left side is itself a space-like character still parses (llama.cpp: `word.find(' ', 1)`)."""
    ranks: dict[tuple[str, str], int] = {}
    for rank, line in enumerate(merges):
        cut = line.find(" ", 1)
        pair = (line[:cut], line[cut + 1 :]) if cut >= 0 else ("", "")
        if pair not in ranks:  # the first occurrence wins, as with emplace()
            ranks[pair] = rank
    return ranks


def _merge(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Lowest-rank-first pair merging over a linked list of symbols; returns the final symbols in order.
    A queued pair is stale when either side's text changed since it was pushed."""
    n = len(word)
    if n <= 1:
        return [word] if word else []
    symbols = list(word)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prev = list(range(-1, n - 1))
    heap: list[tuple[int, int, int, str]] = []

    def push(left: int, right: int) -> None:
        if left < 0 or right < 0:
            return
        rank = ranks.get((symbols[left], symbols[right]))
        if rank is not None:
            heapq.heappush(heap, (rank, left, right, symbols[left] + symbols[right]))

    for i in range(1, n):
        push(i - 1, i)
    while heap:
        _, left, right, joined = heapq.heappop(heap)
        if not symbols[left] or not symbols[right] or symbols[left] + symbols[right] != joined:
            continue
        symbols[left] = joined
        symbols[right] = ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        push(prev[left], left)
        push(left, nxt[left])
    return [s for s in symbols if s]
