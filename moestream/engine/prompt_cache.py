"""Prompt cache: the KV rows of earlier requests, kept by token prefix, so a new request that starts with the same
tokens (an agent's system prompt, tool definitions, the conversation so far) skips computing them.

Blocks: a sequence's tokens are cut into blocks of `block` tokens; a block is known by the hash of its tokens and
its parent's hash (so one hash names the whole prefix up to it), and holds every layer's K and V rows for its
tokens. A finished request stores all its blocks, the last one partial. A lookup follows the chain of full blocks of
the new prompt, then takes the child of the last match sharing the longest start with the rest (so reuse is token-
exact, not rounded to a block), and stops one token short of the prompt's end: that token's logits are needed to
sample. Restored rows are the same numbers the request would compute (a row of every layer depends only on the
tokens before it, and the kernels compute each row alone), so outputs are identical with and without it.

With a disk tier (prompt_disk.py) every stored block is also written to a file, and a block missing from RAM is read
back from it. Memory: least recently used blocks go first once the blocks' bytes exceed the budget. A lookup touches
the whole chain it used, so a prefix is never evicted before its extensions. Models with linear-attention layers
keep a recurrent state instead of rows, which a prefix cannot be cut from: the cache is off for them."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .kv_cache import KVCache
from .prompt_disk import PromptDisk

BLOCK_TOKENS = 64


@dataclass
class _Block:
    tokens: tuple[int, ...]
    parent: bytes | None
    k: list[torch.Tensor]  # per layer [KVH, n, Dk]
    v: list[torch.Tensor]  # per layer [KVH, n, Dv]
    nbytes: int


@dataclass
class PromptCacheStats:
    lookups: int = 0
    lookup_tokens: int = 0  # prompt tokens looked up
    hit_tokens: int = 0  # of those, restored from the cache
    stored_blocks: int = 0
    evicted_blocks: int = 0
    disk_blocks: int = 0  # blocks read back from the disk tier


@dataclass
class PromptCache:
    budget: int  # bytes
    block: int = BLOCK_TOKENS
    stats: PromptCacheStats = field(default_factory=PromptCacheStats)
    disk: PromptDisk | None = None  # a second tier on disk, which outlives the process (prompt_disk.py)

    def __post_init__(self) -> None:
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()  # least recently used first
        self._children: dict[bytes | None, set[bytes]] = {}
        self.bytes = 0
        self._lock = threading.Lock()  # the engine thread stores and looks up; /metrics reads from another

    @property
    def blocks(self) -> int:
        return len(self._blocks)

    def restore(self, kv: KVCache, prompt: list[int]) -> int:
        """Write the longest cached prefix of `prompt` (at most all but its last token) into the empty `kv`;
        returns its length."""
        with self._lock:
            chain = self._match(prompt[: len(prompt) - 1])
            self.stats.lookups += 1
            self.stats.lookup_tokens += len(prompt)
            n = sum(used for _, used in chain)
            self.stats.hit_tokens += n
        if n:
            _write(kv, chain)
        return n

    def store(self, kv: KVCache, tokens: list[int]) -> None:
        """Keep the KV rows of `tokens` (the first kv.length of a finished sequence)."""
        tokens = tokens[: kv.length]
        parent = None
        for start in range(0, len(tokens), self.block):
            piece = tuple(tokens[start: start + self.block])
            key = _key(parent, piece)
            with self._lock:
                if key in self._blocks:
                    self._blocks.move_to_end(key)
                else:
                    block = _Block(piece, parent, *_rows(kv, start, len(piece)))
                    self._add(key, block)
                    if self.disk is not None:
                        self.disk.save(key, parent, piece, block.k, block.v)
            parent = key
        with self._lock:
            self._evict()

    # --- inside the lock --------------------------------------------------------------------------------------

    def _match(self, tokens: list[int]) -> list[tuple[_Block, int]]:
        """(block, rows used) along the cached chain for `tokens`, most recently used after."""
        chain, parent, start = [], None, 0
        while start < len(tokens):
            piece = tuple(tokens[start: start + self.block])
            key = _key(parent, piece)
            block = self._get(key, piece) if len(piece) == self.block else None
            if block is None:
                best = self._longest_child(parent, piece)
                if best is not None:
                    chain.append(best)
                    self._blocks.move_to_end(_key(best[0].parent, best[0].tokens))
                break
            chain.append((block, self.block))
            self._blocks.move_to_end(key)
            parent, start = key, start + self.block
        return chain

    def _get(self, key: bytes, tokens: tuple[int, ...]) -> _Block | None:
        """The block from RAM, else from the disk tier (then kept in RAM too)."""
        block = self._blocks.get(key)
        if block is not None or self.disk is None:
            return block
        rows = self.disk.load(key)
        if rows is None:
            return None
        entry = self.disk.index.get(key)
        if entry is None or entry.tokens != tokens:
            return None
        block = _Block(tokens, entry.parent, *rows, sum(t.numel() * t.element_size() for t in rows[0] + rows[1]))
        self._add(key, block)
        self.stats.disk_blocks += 1
        return block

    def _longest_child(self, parent: bytes | None, piece: tuple[int, ...]) -> tuple[_Block, int] | None:
        candidates = {key: self._blocks[key].tokens for key in self._children.get(parent, ())}
        if self.disk is not None:
            candidates.update((key, entry.tokens) for key, entry in self.disk.children_of(parent)
                              if key not in candidates)
        best_key, best_n = None, 0
        for key, tokens in candidates.items():
            n = _common(tokens, piece)
            if n > best_n:
                best_key, best_n = key, n
        if best_key is None:
            return None
        block = self._get(best_key, candidates[best_key])
        return (block, best_n) if block is not None else None

    def _add(self, key: bytes, block: _Block) -> None:
        self._blocks[key] = block
        self._children.setdefault(block.parent, set()).add(key)
        self.bytes += block.nbytes
        self.stats.stored_blocks += 1

    def close(self) -> None:
        """Let queued disk writes finish (a clean shutdown keeps every block)."""
        if self.disk is not None:
            self.disk.flush()

    def _evict(self) -> None:
        while self.bytes > self.budget and self._blocks:
            key, block = self._blocks.popitem(last=False)
            self._children[block.parent].discard(key)
            if not self._children[block.parent]:
                del self._children[block.parent]
            self.bytes -= block.nbytes
            self.stats.evicted_blocks += 1


def _key(parent: bytes | None, tokens: tuple[int, ...]) -> bytes:
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(torch.tensor(tokens, dtype=torch.int64).numpy().tobytes())
    return h.digest()


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _rows(kv: KVCache, start: int, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Copies of every layer's rows start..start+n: (k per layer, v per layer, bytes)."""
    k = [layer[:, start: start + n].clone() for layer in kv.k]
    v = [layer[:, start: start + n].clone() for layer in kv.v]
    return k, v, sum(t.numel() * t.element_size() for t in k + v)


def _write(kv: KVCache, chain: list[tuple[_Block, int]]) -> None:
    """The chain's rows into every layer of the empty `kv`, in order."""
    total = sum(used for _, used in chain)
    for layer in range(len(kv.k)):
        k_buf, v_buf, n = kv.reserve(layer, total)
        for block, used in chain:
            k_buf[:, n: n + used] = block.k[layer][:, :used]
            v_buf[:, n: n + used] = block.v[layer][:, :used]
            n += used
        kv.commit(layer, total)
