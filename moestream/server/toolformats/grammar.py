"""Pieces of the Lark grammars (llguidance's dialect) that force a tool call in a family's format.

Each family's `call_grammar` writes one rule per allowed tool (`call_0`, `call_1`, ...: tool names may hold
characters a rule name cannot) and joins them with `calls_grammar`. Arguments are `%json {schema}` with the
tool's own `parameters`, so the grammar engine enforces types, required keys and key order. A marker that the
model's tokenizer holds as one token is written as that token (`<[id]>`): it must be when the token is special
(no text matches a special token), and should be otherwise (the same text spelt in smaller tokens is a sequence
the model never produced); `special` maps those markers to their ids, the rest are written as text.

Free text that ends at a marker (an XML parameter's value) is a lazy regex that includes the marker when the
marker is text (it ends at the marker's first occurrence), and a plain `(?s:.*)` followed by the token when the
marker is a token of its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ...engine import closed_schema
from ...errors import ConfigError

_REGEX_META = frozenset("\\.+*?()|[]{}^$/-&~#")


def chosen_tools(tools: list[dict], name: str | None) -> list[dict]:
    """The function descriptions the grammar may call: the one named, or all."""
    functions = [t.get("function", t) for t in tools or [] if isinstance(t, dict)]
    functions = [f for f in functions if isinstance(f, dict) and isinstance(f.get("name"), str)]
    if name is not None:
        functions = [f for f in functions if f["name"] == name]
        if not functions:
            raise ConfigError(f"tool_choice names the function '{name}', which is not among the request's tools")
    if not functions:
        raise ConfigError("a tool call was required but the request defines no tools")
    return functions


def parameters(function: dict) -> dict:
    """The function's arguments schema; a function that gives none takes no arguments (OpenAI's reading), so
    its arguments are {}. Objects hold only the properties they name unless the schema sets
    `additionalProperties` (as OpenAI's strict mode and xgrammar's default do): an open object would let a model
    write made-up keys until its token limit inside an otherwise valid call."""
    schema = function.get("parameters")
    if not isinstance(schema, dict) or not schema:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    return closed_schema(schema)


def literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def token(text: str, special: dict[str, int] | None) -> str:
    """A marker: its token where the tokenizer has it as one, else its text."""
    return f"<[{special[text]}]>" if special and text in special else literal(text)


# Call arguments are written on one line (as the formats' examples and OpenAI's own arguments are): at most one
# space between JSON tokens, so a weak model cannot spend its budget on blank lines inside a call
ARGUMENTS_LAYOUT = {"whitespace_pattern": "[ ]?"}


def json_value(schema: dict) -> str:
    """A JSON value under `schema`, laid out on one line."""
    return "%json " + json.dumps({"x-guidance": ARGUMENTS_LAYOUT, **schema}, ensure_ascii=False)


def regex_escape(text: str) -> str:
    """`text` as a regex matching itself, for use inside Lark's /.../."""
    return "".join("\\n" if ch == "\n" else "\\" + ch if ch in _REGEX_META else ch for ch in text)


def text_until(rule: str, end: str, special: dict[str, int] | None) -> tuple[str, str]:
    """(items, rule definition) for any text followed by the marker `end` (included in the items)."""
    if special and end in special:
        return f"{rule} {token(end, special)}", f"{rule}: /(?s:.*)/"
    return rule, f"{rule}[lazy]: /(?s:.*){regex_escape(end)}/"


def calls_grammar(bodies: Sequence[str], parallel: bool, separator: str = "", extra: Sequence[str] = (),
                  before: str = "", after: str = "") -> str:
    """start: one call, or calls joined by `separator` (Lark items, may be empty), between `before` and `after`
    (a block's markers); a call is any of `bodies`."""
    repeat = f" ({separator} call)*" if separator else "+"
    lines = ["start: " + " ".join(filter(None, [before, "calls", after])),
             f"calls: call{repeat if parallel else ''}",
             "call: " + " | ".join(f"call_{i}" for i in range(len(bodies)))]
    lines += [f"call_{i}: {body}" for i, body in enumerate(bodies)]
    return "\n".join([*lines, *extra]) + "\n"
