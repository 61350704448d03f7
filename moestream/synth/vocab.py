"""Tokenizer metadata for a synthetic model: generated offline, or copied from a vocab-only GGUF.

Generated vocabularies have the preset's exact size and the real model's tokenizer kind, and contain no learned
data: every multi-character token is a string over a small alphabet of frequent letters, in order of length, so
every token is reachable by merging two shorter ones.
- SentencePiece ("llama"): <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, printable ASCII and '▁', then
  letter strings; scores fall with the id, so shorter pieces merge first.
- Byte-level BPE ("gpt2"): the 256 GPT-2 byte characters, then letter strings, each with the merge that builds it
  (prefix + last character), then the Qwen control tokens <|endoftext|> <|im_start|> <|im_end|>.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from gguf import GGUFReader, GGUFValueType, GGUFWriter, TokenType

from ..errors import ConfigError
from ..tokenizer.bpe import byte_to_unicode
from ..tokenizer.spm import SPACE
from .presets import Preset

LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
SPM_SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: llama.cpp's SentencePiece defaults
BPE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MODEL_NAMES = {"spm": "llama", "bpe": "gpt2"}


def add_vocab(w: GGUFWriter, p: Preset, vocab_file: Path | None = None) -> None:
    if vocab_file is not None:
        copy_vocab(w, p, vocab_file)
    elif p.tokenizer == "spm":
        add_spm_vocab(w, p.vocab)
    else:
        add_bpe_vocab(w, p.vocab, p.tokenizer_pre or "default")


def add_spm_vocab(w: GGUFWriter, n_vocab: int) -> None:
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    singles = [chr(c) for c in range(0x21, 0x7F)] + [SPACE]
    head = [*SPM_SPECIALS, *bytes_, *singles]
    tokens = head + list(itertools.islice(_strings(SPACE + LETTERS), _room(n_vocab, len(head))))
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * (n_vocab - len(types))
    n_fixed = len(SPM_SPECIALS) + 256
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_fixed + [-float(i) for i in range(n_vocab - n_fixed)])
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def add_bpe_vocab(w: GGUFWriter, n_vocab: int, pre: str) -> None:
    chars = byte_to_unicode()
    space = chars[ord(" ")]  # 'Ġ'
    n_words = _room(n_vocab, 256 + len(BPE_SPECIALS))
    words = list(itertools.islice(_strings(space + LETTERS), n_words))
    tokens = [*chars, *words, *BPE_SPECIALS]
    first_special = n_vocab - len(BPE_SPECIALS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([TokenType.NORMAL] * first_special + [TokenType.CONTROL] * len(BPE_SPECIALS))
    w.add_token_merges([f"{t[:-1]} {t[-1]}" for t in words])
    w.add_bos_token_id(first_special)  # <|endoftext|>, as in Qwen's GGUFs (which do not add it)
    w.add_pad_token_id(first_special)
    w.add_eos_token_id(first_special + 2)  # <|im_end|>
    w.add_add_bos_token(False)


def copy_vocab(w: GGUFWriter, p: Preset, path: Path) -> None:
    """Copy every `tokenizer.*` key from a vocab-only GGUF (e.g. llama.cpp's models/ggml-vocab-*.gguf)."""
    try:
        fields = GGUFReader(path).fields
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--vocab {path}: cannot read it as a GGUF file ({exc})") from exc
    _check_vocab(p, path, fields)
    for name, field in fields.items():
        if name.startswith("tokenizer."):
            sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
            w.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)


def _check_vocab(p: Preset, path: Path, fields: dict) -> None:
    model = fields["tokenizer.ggml.model"].contents() if "tokenizer.ggml.model" in fields else None
    tokens = fields.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens.data) if tokens is not None else 0
    if model != MODEL_NAMES[p.tokenizer] or n_tokens != p.vocab:
        raise ConfigError(f"--vocab {path}: has a '{model}' tokenizer with {n_tokens} tokens; preset '{p.name}' "
                          f"needs '{MODEL_NAMES[p.tokenizer]}' with {p.vocab}")


def _room(n_vocab: int, n_fixed: int) -> int:
    if n_vocab <= n_fixed:
        raise ConfigError(f"a generated vocabulary needs more than {n_fixed} tokens (got {n_vocab})")
    return n_vocab - n_fixed


def _strings(alphabet: str) -> Iterator[str]:
    """Every string of length 2, 3, ... over `alphabet`, shortest first; each one's prefix came earlier."""
    for length in itertools.count(2):
        for chars in itertools.product(alphabet, repeat=length):
            yield "".join(chars)
