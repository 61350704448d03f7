"""`Tokenizer`: text <-> token ids for a GGUF's vocabulary, matching llama.cpp's tokenizer.

    tok = Tokenizer.from_gguf(gguf_file)        # a GGUFFile, its metadata dict, or a path
    ids = tok.encode("Hello", add_bos=None)     # None: the GGUF's add_bos_token default
    text = tok.decode(ids)

Two model kinds are supported: SentencePiece-style ("llama") and byte-level BPE ("gpt2"). Both first split
special tokens out of the text (see `special.py`); SPM then escapes spaces and adds the space prefix, BPE runs
its pre-tokenizer regexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import TokenizerError
from .bpe import BpeModel, unicode_to_byte
from .metadata import check_types, metadata_of
from .special import partition, partition_parts
from .spm import SPACE, SpmModel
from .stream import StreamDecoder
from .vocab import Attr, Vocab, build_vocab

SUPPORTED_MODELS = ("llama", "gpt2")

# Ids llama.cpp assumes when the metadata does not name them, per model kind.
_DEFAULT_IDS: dict[str, dict[str, int | None]] = {
    "llama": {"bos": 1, "eos": 2, "unk": 0},
    "gpt2": {"bos": 11, "eos": 11},
}


class Tokenizer:
    def __init__(self, meta: Mapping[str, Any]):
        check_types(meta)
        self.model_name = _model_name(meta)
        self.pre: str | None = meta.get("tokenizer.ggml.pre")
        self.vocab: Vocab = build_vocab(meta, _DEFAULT_IDS[self.model_name])
        self.is_spm = self.model_name == "llama"
        self._model = self._build_model(meta)
        # Only SPM adds the space prefix (llama.cpp ignores the key for BPE vocabularies).
        self.add_space_prefix = self.is_spm and bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        # SPM adds BOS unless told otherwise; BPE only for pre types that ask for it (Llama 3).
        default_bos = True if self.is_spm else self._model.pre_tokenizer.add_bos
        self.add_bos_default = bool(meta.get("tokenizer.ggml.add_bos_token", default_bos))
        if not self.is_spm and not self._model.pre_tokenizer.bos:
            self.add_bos_default = False
        self.add_eos_default = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        # Filled on first use: converting every piece up front costs ~0.5 s for a 256k vocabulary.
        self._pieces: list[bytes | None] = [None] * len(self.vocab)

    @classmethod
    def from_gguf(cls, gguf_file: Any) -> Tokenizer:
        """Build from a `GGUFFile` (uses `.metadata`), a metadata mapping, or a path to a .gguf file."""
        return cls(metadata_of(gguf_file))

    # ---- properties -------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def bos_id(self) -> int | None:
        return self.vocab.ids.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self.vocab.ids.get("eos")

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation: eos, eot, eom, FIM pad/repo/file-sep and well-known end markers."""
        return self.vocab.eog_ids

    def is_special(self, token_id: int) -> bool:
        """Control or unknown token: hidden by `decode(skip_special=True)` and by the stream decoder."""
        return self.vocab.has(token_id, Attr.CONTROL | Attr.UNKNOWN)

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry as stored in the GGUF (e.g. '▁Hello', 'Ġworld', '<0x0A>')."""
        return self.vocab.tokens[token_id]

    def token_to_id(self, text: str) -> int | None:
        return self.vocab.token_to_id.get(text)

    # ---- encode -----------------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = True,
               add_eos: bool | None = False) -> list[int]:
        """Token ids for `text`. `add_bos=None` follows the GGUF's add_bos_token. `parse_special`: turn literal
        control-token texts (e.g. '<|im_start|>') into their ids; user-defined tokens are always recognised.
        `add_eos` defaults to False, not to the GGUF's add_eos_token (None), because encoded text is normally a
        prompt to be continued."""
        return self.encode_parts([(text, parse_special)], add_bos, add_eos)

    def encode_parts(self, parts: Iterable[tuple[str, bool]], add_bos: bool | None = None,
                     add_eos: bool | None = False) -> list[int]:
        """`encode` of the parts' concatenation, with `parse_special` given per part (text, parse_special):
        control-token texts count only inside parts that allow them, never across a part boundary."""
        out: list[int] = []
        if self.add_bos_default if add_bos is None else add_bos:
            if self.bos_id is None:
                raise TokenizerError("BOS requested but this vocabulary has no BOS token")
            out.append(self.bos_id)
        fragments = partition_parts(parts, self.vocab)
        if self.is_spm:
            self._encode_spm(fragments, out)
        else:
            for frag in fragments:
                out.extend([frag] if isinstance(frag, int) else self._model.tokenize(frag))
        if (self.add_eos_default if add_eos is None else add_eos) and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def has_control_text(self, text: str) -> bool:
        """Whether `text` contains the literal text of a control or unknown token (e.g. '</s>')."""
        return any(isinstance(frag, int) and self.is_special(frag) for frag in partition(text, self.vocab, True))

    def _encode_spm(self, fragments: list[str | int], out: list[int]) -> None:
        # llama.cpp prefixes a space to the text at the start and after every special token, so that a word
        # there tokenizes like a word after a space (SentencePiece's "dummy prefix").
        prev_special = True
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                frag = " " + frag
            out.extend(self._model.tokenize(frag.replace(" ", SPACE)))
            prev_special = False

    # ---- decode -----------------------------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token's piece (may be part of a UTF-8 sequence); special tokens give their text."""
        if not 0 <= token_id < len(self._pieces):
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (size {len(self._pieces)})")
        piece = self._pieces[token_id]
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        return piece

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`. Inverse of `encode`: for SPM the one space `encode` adds at the start and after a
        special token is removed again. No other clean-up (llama.cpp's clean_spaces would not round-trip)."""
        parts: list[bytes] = []
        prev_special = True
        for token_id in ids:
            piece = self.token_bytes(token_id)
            special = self.vocab.has(token_id, Attr.CONTROL | Attr.UNKNOWN | Attr.USER_DEFINED)
            if skip_special and self.is_special(token_id):
                piece = b""
            elif self.add_space_prefix and prev_special and not special and piece.startswith(b" "):
                piece = piece[1:]
            parts.append(piece)
            prev_special = special
        return b"".join(parts).decode("utf-8", "replace")

    def stream(self, skip_special: bool = True) -> StreamDecoder:
        """A `StreamDecoder` for generated ids (see stream.py)."""
        return StreamDecoder(self, skip_special=skip_special)

    # ---- construction helpers ---------------------------------------------------------------------------

    def _build_model(self, meta: Mapping[str, Any]) -> SpmModel | BpeModel:
        if self.is_spm:
            return SpmModel(self.vocab, self.vocab.ids.get("unk"))
        merges = meta.get("tokenizer.ggml.merges")
        if not merges:
            raise TokenizerError("BPE vocabulary without 'tokenizer.ggml.merges' in the GGUF metadata")
        return BpeModel(self.vocab, merges, self.pre)

    def _piece(self, token_id: int) -> bytes:
        """llama.cpp's token_to_piece(special=True): specials verbatim, byte tokens as their byte, normal tokens
        unescaped ('▁' -> ' ' for SPM, GPT-2 characters -> bytes for BPE), unused/undefined tokens empty."""
        text = self.vocab.tokens[token_id]
        attr = self.vocab.attrs[token_id]
        if attr & (Attr.CONTROL | Attr.UNKNOWN | Attr.USER_DEFINED):
            return _utf8(text)
        if attr & Attr.NORMAL:
            return _utf8(text.replace(SPACE, " ")) if self.is_spm else _gpt2_bytes(text)
        if attr & Attr.BYTE:
            return _byte_token_value(text)
        return b""


def _model_name(meta: Mapping[str, Any]) -> str:
    name = meta.get("tokenizer.ggml.model")
    if name is None:
        raise TokenizerError("GGUF metadata has no 'tokenizer.ggml.model': the file carries no tokenizer")
    if name not in SUPPORTED_MODELS:
        raise TokenizerError(
            f"unsupported tokenizer.ggml.model = '{name}'; supported: {', '.join(SUPPORTED_MODELS)} "
            "('llama' = SentencePiece-style, 'gpt2' = byte-level BPE)"
        )
    return name


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _gpt2_bytes(text: str) -> bytes:
    # Characters outside GPT-2's byte alphabet (a vocabulary quirk) are kept as their own UTF-8.
    table = unicode_to_byte()
    out = bytearray()
    for ch in text:
        b = table.get(ch)
        if b is None:
            out += _utf8(ch)
        else:
            out.append(b)
    return bytes(out)


def _byte_token_value(text: str) -> bytes:
    # '<0xAB>' -> b'\xab'; anything else typed as a byte token is taken literally.
    if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
        try:
            return bytes([int(text[3:5], 16)])
        except ValueError:
            pass
    return _utf8(text)
