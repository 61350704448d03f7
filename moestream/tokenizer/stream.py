"""Incremental detokenization for streaming generated text.

A token's piece can end in the middle of a UTF-8 sequence (byte-fallback tokens, byte-level BPE splitting an
emoji); printing each piece as it arrives would show replacement characters. `StreamDecoder` feeds token bytes to
an incremental UTF-8 decoder, which returns only complete characters and keeps an unfinished tail for the next
token; `flush()` releases whatever is left (invalid leftovers become U+FFFD).

Pieces are emitted verbatim: no space-prefix removal, because generated tokens continue a prompt.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


class StreamDecoder:
    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        # skip_special: control/unknown tokens (e.g. '<|im_end|>') print nothing, as in llama.cpp's server.
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token ('' while a multi-byte character is still incomplete)."""
        if self.skip_special and self.tokenizer.is_special(token_id):
            return ""
        return self._decoder.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is held back at the end of the stream; resets the decoder for reuse."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    def pending(self) -> bool:
        """True while bytes of an unfinished character are held back."""
        return bool(self._decoder.getstate()[0])

    def iter_text(self, ids: Iterable[int]) -> Iterator[str]:
        """Non-empty text pieces for a stream of ids, flushing at the end."""
        for token_id in ids:
            piece = self.push(token_id)
            if piece:
                yield piece
        tail = self.flush()
        if tail:
            yield tail
