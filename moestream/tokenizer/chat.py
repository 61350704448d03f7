"""Chat-template rendering: the GGUF's `tokenizer.chat_template` (a Jinja2 template from the model's HF repo),
rendered the way HF transformers' `apply_chat_template(tokenize=False)` does, so prompts match what the model
was trained on.

Same environment as transformers: an immutable sandbox (templates are untrusted code), `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that does not HTML-escape, the globals
`raise_exception` and `strftime_now`, and variables `messages`, `add_generation_prompt`, `tools`, `documents`,
`bos_token`, `eos_token` plus any extra keyword arguments. A `{% generation %}` block (used by transformers to
mark assistant text for training masks) renders its body unchanged.

Without a template in the GGUF the default is ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), the format of
transformers' historical default template.

`render_parts` tells the template's own text apart from message content, so that only the template can insert
control tokens (a user typing '<|im_end|><|im_start|>system' must not open a new turn). It renders a second time
with each content replaced by a unique marker, then checks that the real prompt is that skeleton with each marker
replaced by its content as given or stripped (templates commonly `trim` it); when a template transforms content
in any other way (Qwen3 cuts reasoning out of assistant turns), it returns None and the caller decides. Only
`content` strings are kept apart: other message fields (reasoning, tool calls) count as the template's text.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TokenizerError
from .metadata import metadata_of

DEFAULT_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Names a message's reasoning may come under; transformers copies it to all of them before rendering, since
# templates disagree on which one they read (`reasoning_content` for Qwen/DeepSeek, `thinking` for gpt-oss).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTemplate:
    def __init__(self, source: str | None = None, bos_token: str = "", eos_token: str = ""):
        self.is_default = source is None
        self.source = DEFAULT_CHATML if source is None else source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.source)

    @classmethod
    def from_gguf(cls, gguf_file: Any, name: str | None = None) -> ChatTemplate:
        """The GGUF's template (or a named variant such as 'tool_use' / 'rag'), with its BOS/EOS texts.
        Falls back to ChatML when the file has no template."""
        meta = metadata_of(gguf_file)
        key = "tokenizer.chat_template" + (f".{name}" if name else "")
        source = meta.get(key)
        if name and source is None:
            raise TokenizerError(f"GGUF has no chat template named '{name}' (metadata key '{key}')")
        return cls(source, bos_token=_token_text(meta, "bos"), eos_token=_token_text(meta, "eos"))

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict] | None = None, documents: list[dict] | None = None, **kwargs: Any) -> str:
        """The prompt text for `messages` (dicts with 'role' and 'content'); `add_generation_prompt` appends
        the header that starts the assistant's turn. Extra keyword arguments become template variables
        (e.g. `enable_thinking=False` for Qwen3)."""
        context = {"bos_token": self.bos_token, "eos_token": self.eos_token, **kwargs}
        try:
            return self._template.render(
                messages=_alias_reasoning([dict(m) for m in messages]),
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except Exception as exc:  # template code is data from the file: a TypeError in it is its error, not ours
            raise TokenizerError(f"chat template failed to render: {type(exc).__name__}: {exc}") from None

    def render_parts(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                     **kwargs: Any) -> list[tuple[str, bool]] | None:
        """`render`'s prompt as (text, from_template) parts in order: False for text that is a message's
        content, True for the template's own. None when the two cannot be told apart (see the module notes)."""
        real = self.render(messages, add_generation_prompt, **kwargs)
        nonce = secrets.token_hex(8)
        marked = [_with_marker(m, i, nonce) for i, m in enumerate(messages)]
        try:
            skeleton = self.render(marked, add_generation_prompt, **kwargs)
        except TokenizerError:  # the template looked into the content (e.g. checked a prefix) and refused
            return None
        pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", skeleton)  # template text, index, template text, ...
        return _align(real, pieces, [m.get("content") for m in messages])


def _with_marker(message: Mapping[str, Any], index: int, nonce: str) -> dict:
    # private-use characters around a random nonce: no template text or user text can contain the marker
    content = message.get("content")
    return {**message, "content": f"\ue000{nonce}:{index}\ue001"} if isinstance(content, str) else dict(message)


def _align(real: str, pieces: list[str], contents: list[Any]) -> list[tuple[str, bool]] | None:
    """Match `real` against the skeleton's pieces; each marker stands for its content as is or stripped."""
    parts, pos = [], 0
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            if not real.startswith(piece, pos):
                return None
            parts.append((piece, True))
        else:
            following = pieces[k + 1]  # split() puts template text (maybe empty) after every marker
            piece = next((t for t in _variants(contents[int(piece)]) if real.startswith(following, pos + len(t))
                          and real.startswith(t, pos)), None)
            if piece is None:
                return None
            parts.append((piece, False))
        pos += len(piece)
    return [p for p in parts if p[0]] if pos == len(real) else None


def _variants(content: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((content, content.strip(), content.rstrip(), content.lstrip())))


def _token_text(meta: Mapping[str, Any], role: str) -> str:
    token_id = meta.get(f"tokenizer.ggml.{role}_token_id")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else ""


def _alias_reasoning(messages: list[dict]) -> list[dict]:
    out = []
    for message in messages:
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes '<', '>', '&' and "'", which would change prompts.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


MAX_RESULT_LENGTH = 1 << 22  # a template's own '*' may build strings or lists of at most this many items


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox already bounds `range()`; this also bounds `**` and `*`, which a hostile template in a GGUF
    could use to hang the process (`10 ** 10 ** 10`) or fill memory (`'x' * 10 ** 12`)."""

    intercepted_binops = frozenset(["**", "*"])

    def call_binop(self, context, operator: str, left, right):
        if operator == "**" and _power_too_large(left, right):
            raise jinja2.exceptions.SecurityError(f"chat template computes a power too large ({right})")
        if operator == "*" and _result_length(left, right) > MAX_RESULT_LENGTH:
            raise jinja2.exceptions.SecurityError("chat template repeats a string or list too many times")
        return super().call_binop(context, operator, left, right)


def _power_too_large(base, exponent) -> bool:
    """An integer result over 2^65536 bits' worth (or an exponent over 1024) is no chat template's business."""
    if not isinstance(exponent, (int, float)) or isinstance(exponent, bool):
        return False
    bits = base.bit_length() if isinstance(base, int) else 1
    return abs(exponent) > 1024 or bits * abs(exponent) > 1 << 16


def _result_length(left, right) -> int:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            return len(seq) * n
    return 0


def _compile(source: str) -> jinja2.Template:
    env = _BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TokenizerError(f"chat template does not compile: {type(exc).__name__}: {exc}") from None
