"""Split special tokens out of raw text before the model tokenizer sees it (llama.cpp `tokenizer_st_partition`).

The result is a list of fragments: `str` for text still to tokenize, `int` for a special token id. Tokens are
tried one at a time, longest first, and each one is cut out of every text fragment left so far; so a longer token
always wins over a shorter one even when the shorter one occurs earlier and overlaps it. Control and unknown
tokens are only recognised when `parse_special` is set; user-defined tokens always are (as HF tokenizers do for
"added tokens"), which matters for neox-style vocabularies that list e.g. runs of spaces as added tokens.

`partition_parts` does the same for text given in parts, each with its own `parse_special` (a chat template's
own text: yes; message content: no, so that '<|im_start|>' typed by a user stays text), and joins adjacent text
fragments again: text without control-token texts then tokenizes exactly as the parts' concatenation would.
"""

from __future__ import annotations

from collections.abc import Iterable

from .vocab import Attr, Vocab

Fragment = str | int


def partition(text: str, vocab: Vocab, parse_special: bool) -> list[Fragment]:
    if not text:
        return []
    fragments: list[Fragment] = [text]
    skip = Attr.UNDEFINED if parse_special else (Attr.CONTROL | Attr.UNKNOWN)
    for token_id in vocab.special_ids:
        if vocab.attrs[token_id] & skip:
            continue
        token_text = vocab.tokens[token_id]
        # Cheap pre-check on the whole input: most special tokens never occur in a given text.
        if token_text in text:
            fragments = _cut(fragments, token_text, token_id)
    return fragments


def partition_parts(parts: Iterable[tuple[str, bool]], vocab: Vocab) -> list[Fragment]:
    """parts: (text, parse_special) in order."""
    out: list[Fragment] = []
    for text, parse_special in parts:
        for frag in partition(text, vocab, parse_special):
            if isinstance(frag, str) and out and isinstance(out[-1], str):
                out[-1] += frag
            else:
                out.append(frag)
    return out


def _cut(fragments: list[Fragment], token_text: str, token_id: int) -> list[Fragment]:
    out: list[Fragment] = []
    for frag in fragments:
        if isinstance(frag, int) or token_text not in frag:
            out.append(frag)
            continue
        # str.split finds non-overlapping occurrences left to right, like llama.cpp's repeated find().
        pieces = frag.split(token_text)
        for i, piece in enumerate(pieces):
            if i:
                out.append(token_id)
            if piece:  # empty text between adjacent tokens is dropped, as in llama.cpp
                out.append(piece)
    return out
