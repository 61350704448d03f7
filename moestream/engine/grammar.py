"""Constrained decoding: a grammar (a JSON schema, any JSON object, or a Lark grammar with JSON schemas inside, as
tool calls need) becomes a token mask applied to the logits before every sampled token of a request.

The engine is llguidance (Rust, no Python dependencies), chosen over xgrammar on measurements with this project's
tokenizers (bench/grammar_engines.py, docs/benchmarks.md): both compile the schemas clients send (nested
objects, enums, bounded arrays, `$ref`, patterns, `anyOf`/`oneOf`), but where xgrammar cannot enforce a keyword
(`uniqueItems`, `not`) it compiles the schema anyway and lets invalid output through, while llguidance refuses it
by name (a 400 here); a schema seen for the first time costs ~3 ms rather than 20-50 ms on a 151k vocabulary;
its Lark dialect embeds JSON schemas (`%json {...}`), which tool-call formats need; and xgrammar needs
transformers and triton at run time. xgrammar's mask is faster (56 against 300 us per token at 151k), which is
a fraction of a percent of a decode step here.

Shapes: a step's masks are one int32 tensor [rows, ceil(V / 32)], bit t % 32 of word t // 32 set when token t
is allowed; V is the model's logits width (which may exceed the tokenizer's vocabulary: the extra ids are never
allowed). All masks of a step are computed in one call that runs the requests' matchers in parallel threads.

Ending: end-of-generation tokens are allowed exactly where the grammar may end; once the grammar can take nothing
more, the request ends with finish_reason 'stop' without waiting for the model to choose one."""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any

import torch

from ..errors import ConfigError
from ..tokenizer import Tokenizer

# Whitespace between JSON tokens: what models write (indents, newlines), but bounded, so that a model cannot spend
# its whole budget on blanks inside an otherwise finished object
JSON_LAYOUT = {"whitespace_pattern": r"[ ]?|\n[ \t]{0,16}"}
_START = re.compile(r"^start\s*:", re.M)
_SPECIAL = b"\xff"  # llguidance's mark for a token that is not text (matched only as <|name|> or <[id]> in Lark)


class GrammarError(ConfigError):
    """A grammar or JSON schema that cannot be compiled; the message says what is wrong with it."""


def json_schema_grammar(schema: Any, strict: bool = False) -> str:
    """Lark for JSON values valid under `schema` (a dict, or True for any value). `strict`: objects hold only the
    properties they name unless the schema sets `additionalProperties` (OpenAI's strict mode; the server always
    asks for it, as xgrammar's default does, since an open object lets a model ramble inside valid JSON)."""
    if not isinstance(schema, (dict, bool)):
        raise GrammarError(f"a JSON schema is an object or a boolean, not {type(schema).__name__}")
    schema = {} if schema is True else {"not": {}} if schema is False else schema
    if strict:
        schema = closed_schema(schema)
    return f"start: %json {json.dumps({'x-guidance': JSON_LAYOUT, **schema})}"


_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMAS = ("items", "not", "additionalProperties", "if", "then", "else", "contains")


def closed_schema(schema: Any) -> Any:
    """A copy of `schema` where every object schema with `properties` and no `additionalProperties` gets
    `additionalProperties: false`."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_schema(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_schema(s) for name, s in out[key].items()}
    for key in _SUBSCHEMAS:
        if key in out:
            out[key] = closed_schema(out[key])
    return out


def json_object_grammar() -> str:
    """Lark for any JSON object (OpenAI's `response_format: json_object`)."""
    return json_schema_grammar({"type": "object"})


class Constraint:
    """One request's grammar state: which tokens may come next, and whether it is finished."""

    def __init__(self, matcher: Any):
        self.matcher = matcher

    def accept(self, token: int) -> None:
        """Advance past the sampled `token`; a token the mask did not allow is an error (a bug, not input)."""
        if not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} does not fit the grammar: {self.matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar can take no more tokens: the output is complete."""
        return self.matcher.is_stopped() and not self.matcher.is_error()

    @property
    def error(self) -> str | None:
        """Why the matcher cannot go on (it refused a token, or ran out of its limits), or None."""
        return _clean(self.matcher.get_error()) if self.matcher.is_error() else None

    def reset(self) -> None:
        self.matcher.reset()


class GrammarCompiler:
    """Compiles grammars for one tokenizer and computes batched masks. Building the token table costs about a
    second for a 150k vocabulary, so it is done once per engine, on first use."""

    def __init__(self, tokenizer: Tokenizer, logits_width: int):
        self.tokenizer, self.width = tokenizer, max(logits_width, tokenizer.vocab_size)
        self._lock = threading.Lock()
        self._executor = None

    @functools.cached_property
    def _lltok(self) -> Any:
        return _llg().LLTokenizer(_TokenTable(self.tokenizer), n_vocab=self.width,
                                  eos_token=sorted(self.tokenizer.eog_ids) or None)

    def compile(self, lark: str) -> Constraint:
        """A fresh Constraint for a Lark grammar (its rule `start` is the whole output); GrammarError names what is
        wrong. SentencePiece models begin a word with a space the decoder drops from the reply's first token, so
        the output may begin with one space there."""
        llg = _llg()
        with self._lock:
            tok = self._lltok
        if self.tokenizer.add_space_prefix:
            lark = 'start: " "? output_\n' + _START.sub("output_:", lark)
        grammar = llg.LLMatcher.grammar_from_lark(lark)
        error = llg.LLMatcher.validate_grammar(grammar, tok)
        if error:
            raise GrammarError(_clean(error))
        matcher = llg.LLMatcher(tok, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(_clean(matcher.get_error()))
        return Constraint(matcher)

    def words(self) -> int:
        return (self.width + 31) // 32

    def fill(self, constraints: list[Constraint]) -> torch.Tensor:
        """Masks [len(constraints), words] of the next allowed tokens, computed in parallel."""
        masks = torch.empty(len(constraints), self.words(), dtype=torch.int32)
        if self._executor is None:
            self._executor = _llg().LLExecutor()
        pairs = [(c.matcher, i) for i, c in enumerate(constraints)]
        self._executor.unsafe_compute_mask_ptr(pairs, masks.data_ptr(), self.words() * 4, len(constraints))
        return masks


_BITS = torch.tensor([1 << b for b in range(31)] + [-(1 << 31)], dtype=torch.int32)


def apply_mask(logits: torch.Tensor, mask: torch.Tensor) -> None:
    """logits [V] in place: -inf where `mask` [words] has the token's bit clear (ids past the mask too)."""
    allowed = ((mask.unsqueeze(-1) & _BITS) != 0).reshape(-1)
    width = min(logits.shape[-1], allowed.numel())
    logits[:width].masked_fill_(~allowed[:width], float("-inf"))
    logits[width:] = float("-inf")


class _TokenTable:
    """What llguidance's LLTokenizer reads from a tokenizer: every id's bytes (control tokens marked), the
    end-of-sequence ids, and an encode function for text it must tokenize itself."""

    def __init__(self, tok: Tokenizer):
        self._tok = tok
        self.eos_token_id = tok.eos_id if tok.eos_id is not None else next(iter(sorted(tok.eog_ids)), 0)
        self.bos_token_id = tok.bos_id
        self.special_token_ids = [i for i in range(tok.vocab_size) if tok.is_special(i)]
        special = set(self.special_token_ids)
        self.tokens = [_SPECIAL + tok.token_bytes(i) if i in special else tok.token_bytes(i)
                       for i in range(tok.vocab_size)]
        self.is_tokenizer_wrapper = True

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self._tok.encode(text, add_bos=False, parse_special=False)


def _clean(message: str) -> str:
    """llguidance's message without the grammar listing it appends ('at 2(10): ... 1 | start: ...')."""
    message = " ".join(message.split())
    message = re.sub(r"^at \d+\(\d+\): ", "", message)
    return re.split(r" \d+ \| ", message)[0][:500]


@functools.cache
def _llg() -> Any:
    try:
        import llguidance
    except ImportError:  # a dependency of the package: only a broken install lacks it
        raise GrammarError("constrained decoding needs the 'llguidance' package (pip install llguidance)") from None
    return llguidance
