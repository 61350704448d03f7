"""The vocabulary shared by both tokenizer kinds: token texts, scores, per-token attributes, special ids.

Attributes follow llama.cpp (`src/llama-vocab.cpp`, `load`): GGUF token types become attribute flags, then some
tokens are promoted to CONTROL by their text (EOT/EOM/FIM/end-of-generation markers that converters sometimes
mark as normal), and the end-of-generation set is built from metadata ids plus those texts. Matching that logic
matters because the attributes decide which literal strings `encode(parse_special=...)` splits out and which
tokens `decode(skip_special=True)` hides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any

from ..errors import TokenizerError


class Attr(IntFlag):
    """Per-token attribute flags (llama.cpp's llama_token_attr subset)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5


# GGUF `tokenizer.ggml.token_type` values -> attributes (anything else is UNDEFINED).
_TYPE_TO_ATTR = {1: Attr.NORMAL, 2: Attr.UNKNOWN, 3: Attr.CONTROL, 4: Attr.USER_DEFINED, 5: Attr.UNUSED, 6: Attr.BYTE}

# Tokens split out of raw text before the model tokenizer runs (llama.cpp's "special tokens cache").
SPECIAL_ATTRS = Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN

# Texts llama.cpp uses to find roles the metadata does not name. Each matching token is also forced to CONTROL.
_ROLE_TEXTS: dict[str, tuple[str, ...]] = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
            "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}

# Any token with one of these texts ends generation.
_EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
})

# gpt-oss (harmony) structure tokens: llama.cpp makes them USER_DEFINED so that they are always printed, since
# the harmony output parser needs to see them even when control tokens are hidden.
_ALWAYS_SHOWN = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

_ID_KEYS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
    "eom": "tokenizer.ggml.eom_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
    "fim_pre": "tokenizer.ggml.fim_pre_token_id",
    "fim_suf": "tokenizer.ggml.fim_suf_token_id",
    "fim_mid": "tokenizer.ggml.fim_mid_token_id",
    "fim_pad": "tokenizer.ggml.fim_pad_token_id",
    "fim_rep": "tokenizer.ggml.fim_rep_token_id",
    "fim_sep": "tokenizer.ggml.fim_sep_token_id",
}
# Older converters wrote these names for the FIM ids.
_DEPRECATED_ID_KEYS = {
    "fim_pre": "tokenizer.ggml.prefix_token_id",
    "fim_suf": "tokenizer.ggml.suffix_token_id",
    "fim_mid": "tokenizer.ggml.middle_token_id",
}


@dataclass
class Vocab:
    tokens: list[str]
    scores: list[float]
    attrs: list[Attr]
    token_to_id: dict[str, int]
    ids: dict[str, int | None] = field(default_factory=dict)  # role -> id ("bos", "eos", "eot", ...)
    eog_ids: frozenset[int] = frozenset()
    special_ids: tuple[int, ...] = ()  # SPECIAL_ATTRS tokens, longest text first

    def __len__(self) -> int:
        return len(self.tokens)

    def has(self, token_id: int, attr: Attr) -> bool:
        return bool(self.attrs[token_id] & attr)


def build_vocab(meta: Mapping[str, Any], default_ids: Mapping[str, int | None]) -> Vocab:
    """Read tokens/scores/types from metadata, then resolve special ids, EOG set and the special-token list.
    `default_ids` are the model-kind defaults llama.cpp uses when a key is absent (e.g. SPM bos=1, eos=2)."""
    tokens = _required(meta, "tokenizer.ggml.tokens")
    n = len(tokens)
    # llama.cpp replaces empty token texts with a unique placeholder so that lookups stay one-to-one.
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    scores = _per_token(meta, "tokenizer.ggml.scores", n, 0.0)
    types = _per_token(meta, "tokenizer.ggml.token_type", n, 1)
    attrs = [_TYPE_TO_ATTR.get(int(t), Attr.UNDEFINED) for t in types]
    token_to_id = {text: i for i, text in enumerate(tokens)}
    vocab = Vocab(tokens, [float(s) for s in scores], attrs, token_to_id)
    vocab.ids = _resolve_ids(meta, default_ids, vocab)
    vocab.eog_ids = frozenset(_eog_ids(vocab))
    for text in _ALWAYS_SHOWN:
        if text in token_to_id:
            vocab.attrs[token_to_id[text]] = Attr.USER_DEFINED
    # Built last: it depends on the attributes adjusted above.
    vocab.special_ids = _special_ids(vocab)
    return vocab


def _required(meta: Mapping[str, Any], key: str) -> list:
    value = meta.get(key)
    if not isinstance(value, list) or not value:
        raise TokenizerError(f"GGUF metadata key '{key}' is missing or empty: the file carries no usable vocabulary")
    return value


def _per_token(meta: Mapping[str, Any], key: str, n: int, default: Any) -> list:
    value = meta.get(key)
    if value is None:
        return [default] * n
    if len(value) < n:
        raise TokenizerError(f"GGUF metadata key '{key}' has {len(value)} entries for {n} tokens")
    return value


def _resolve_ids(meta: Mapping[str, Any], defaults: Mapping[str, int | None], vocab: Vocab) -> dict[str, int | None]:
    n = len(vocab)
    ids: dict[str, int | None] = {}
    for role, key in _ID_KEYS.items():
        default = defaults.get(role)
        # Out-of-range defaults are disabled; out-of-range metadata values fall back to the default.
        ids[role] = default if default is not None and 0 <= default < n else None
        for k in (key, _DEPRECATED_ID_KEYS.get(role)):
            value = meta.get(k) if k else None
            if isinstance(value, int) and 0 <= value < n:
                ids[role] = value
    _find_roles_by_text(vocab, ids)
    return ids


def _find_roles_by_text(vocab: Vocab, ids: dict[str, int | None]) -> None:
    """Fill roles the metadata left empty from well-known token texts, forcing those tokens to CONTROL.
    (llama.cpp takes the first hit of a hash-map walk; we take the lowest id so the result is deterministic.)"""
    for role, texts in _ROLE_TEXTS.items():
        if ids.get(role) is not None:
            continue
        hits = sorted(vocab.token_to_id[t] for t in texts if t in vocab.token_to_id)
        if hits:
            ids[role] = hits[0]
            vocab.attrs[hits[0]] |= Attr.CONTROL


def _eog_ids(vocab: Vocab) -> set[int]:
    ids = vocab.ids
    eog = {ids[r] for r in ("fim_pad", "fim_rep", "fim_sep") if ids.get(r) is not None}
    for text in _EOG_TEXTS:
        token_id = vocab.token_to_id.get(text)
        if token_id is not None:
            eog.add(token_id)
            vocab.attrs[token_id] |= Attr.CONTROL
    eog |= {ids[r] for r in ("eos", "eot", "eom") if ids.get(r) is not None}
    _apply_eog_workarounds(vocab, eog)
    return eog


def _apply_eog_workarounds(vocab: Vocab, eog: set[int]) -> None:
    """Two llama.cpp exceptions: in gpt-oss (harmony) / solar-open vocabs `<|end|>` ends a message, not the
    generation; in gemma4 / plamo vocabs `</s>` is an ordinary token."""
    texts = {vocab.tokens[i]: i for i in eog}
    calls = "<|call|>" in texts or "<|calls|>" in texts
    if "<|end|>" in texts and calls and ("<|return|>" in texts or "<|flush|>" in texts):
        end_id = texts["<|end|>"]
        eog.discard(end_id)
        vocab.attrs[end_id] = Attr.USER_DEFINED
    if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
        eog.discard(texts["</s>"])
        vocab.attrs[texts["</s>"]] = Attr.NORMAL


def _special_ids(vocab: Vocab) -> tuple[int, ...]:
    """Ids split out of raw text first, longest text first so that e.g. `<|im_end|>` wins over `<|im`.
    Ties keep id order (llama.cpp's sort is unstable there; equal-length tokens rarely compete)."""
    special = {a for a in set(vocab.attrs) if a & SPECIAL_ATTRS}  # a few distinct flags, not one `&` per token
    ids = [i for i, a in enumerate(vocab.attrs) if a in special]
    ids.sort(key=lambda i: -len(vocab.tokens[i].encode("utf-8", "surrogateescape")))
    return tuple(ids)
