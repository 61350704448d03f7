"""Mistral format, in both of its generations (one parser reads either, so no template needs telling apart):

    older (Mistral 7B v0.3, Nemo, Large 2):  [TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "a1b2c3d4e"}, ...]
    newer (Small 3.2, Devstral, Magistral):  [TOOL_CALLS]f[ARGS]{...}[TOOL_CALLS]g[ARGS]{...}
                                             ([CALL_ID]a1b2c3d4e may come before [ARGS], as Small 3.2 renders it)

The grammar allows both forms too; the model takes the one it was trained on. Reasoning is [THINK]...[/THINK]
(Magistral) or <think>...</think>.
"""

from __future__ import annotations

import functools
import json

import regex

from . import grammar as g
from .base import OutputParser

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_NAMED = regex.compile(r"\s*([\w.\-]+)(?:\[CALL_ID\]\s*\w+)?\s*\[ARGS\]")
_ARRAY = regex.compile(r"\s*\[")
_OBJECT = regex.compile(r"\s*(?=\{)")
_COMMA = regex.compile(r"\s*,")
_ARRAY_END = regex.compile(r"\s*\]")
_ID = "/[A-Za-z0-9]{9}/"  # Mistral's call ids: nine letters or digits
_QUOTED_ID = '/"[A-Za-z0-9]{9}"/'


class MistralParser(OutputParser):
    family = "mistral"
    call_openers = (TOOL_CALLS,)
    reasoning_tags = (("[THINK]", "[/THINK]"), ("<think>", "</think>"))
    grammar_markers = (TOOL_CALLS, ARGS, CALL_ID)

    def _open_call(self, marker: str) -> None:
        self._state = functools.partial(self._branch, [(_NAMED, self._named), (_ARRAY, self._array)],
                                        self._abandon)

    def _named(self, match: regex.Match[str]) -> None:
        self._start_call(match.group(1))
        self._read_json_args(self._text)

    def _array(self, _match: regex.Match[str]) -> None:
        self._state = self._array_item

    def _array_item(self) -> bool:
        """In the older form's list: the next call object, a comma, or the closing bracket."""
        return self._branch([(_OBJECT, self._object), (_COMMA, self._goto(self._array_item)),
                             (_ARRAY_END, self._goto(self._text))], self._abandon)

    def _object(self, _match: regex.Match[str]) -> None:
        if self._raw is None:  # a later call of the list: only its own text comes back if it is abandoned
            self._raw = ""
        self._read_call_object(self._array_item)

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        t = functools.partial(g.token, special=special)
        functions = g.chosen_tools(tools, name)
        more = "+" if parallel else ""
        items = f" ({g.literal(', ')} item)*" if parallel else ""
        lines = [f"start: named{more} | listed",
                 "named: " + " | ".join(_named_call(f, t) for f in functions),
                 f"listed: {t(TOOL_CALLS)} {g.literal('[')} item{items} {g.literal(']')}",
                 "item: " + " | ".join(_listed_call(f) for f in functions)]
        return "\n".join(lines) + "\n"


def _named_call(function: dict, t) -> str:
    """[TOOL_CALLS]name([CALL_ID]id)?[ARGS]{...}"""
    return " ".join([t(TOOL_CALLS), g.literal(function["name"]), f"({t(CALL_ID)} {_ID})?", t(ARGS),
                     g.json_value(g.parameters(function))])


def _listed_call(function: dict) -> str:
    """{"name": "f", "arguments": {...}(, "id": "...")?}"""
    head = '{"name": ' + json.dumps(function["name"], ensure_ascii=False) + ', "arguments": '
    return " ".join([g.literal(head), g.json_value(g.parameters(function)),
                     "(" + g.literal(', "id": ') + " " + _QUOTED_ID + ")?",
                     g.literal("}")])
