"""Llama 3.1 / 3.2 / 3.3 JSON tool calls: the whole reply is the call object, with no marker around it,

    {"name": "get_weather", "parameters": {"city": "Paris"}}

optionally after <|python_tag|>. With no marker, only the start of the reply decides: it is read as a call when
it begins (after whitespace) with '{', held back meanwhile, and given back as Text as soon as it turns out not
to be a call object naming one of the tools. Further calls may follow, separated by ';' (the templates render
one call per turn, so this is leniency for what models do).
"""

from __future__ import annotations

import json

import regex

from . import grammar as g
from .base import OutputParser, State

PYTHON_TAG = "<|python_tag|>"
_CALL_START = regex.compile(r"\s*(?:" + regex.escape(PYTHON_TAG) + r"\s*)?(?=\{)")
_NEXT_CALL = regex.compile(r"\s*;?\s*(?=\{)")
_REASONING = tuple((regex.compile(r"\s*" + regex.escape(opener)), closer) for opener, closer in
                   OutputParser.reasoning_tags)


class Llama3Parser(OutputParser):
    family = "llama3"
    grammar_markers = (PYTHON_TAG,)

    @property
    def _content(self) -> State:
        return self._start if self.tools else self._text

    def _start(self) -> bool:
        """The reply's start (or what follows its reasoning): reasoning, a call object, or content."""
        reasoning = [(pattern, self._reasoning_opened(closer)) for pattern, closer in _REASONING]
        return self._branch([*reasoning, (_CALL_START, self._call)], self._plain)

    def _reasoning_opened(self, close: str):
        return lambda _match: self._enter_reasoning((close,))

    def _plain(self) -> None:
        self._state = self._text

    def _call(self, match: regex.Match[str]) -> None:
        self._raw = match.group(0)
        self._read_call_object(self._after_call, known=set(self.tools))

    def _after_call(self) -> bool:
        return self._branch([(_NEXT_CALL, self._call)], self._plain)

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        bodies = [_call(function) for function in g.chosen_tools(tools, name)]
        return g.calls_grammar(bodies, parallel, g.literal("; "))


def _call(function: dict) -> str:
    head = '{"name": ' + json.dumps(function["name"], ensure_ascii=False) + ', "parameters": '
    return " ".join([g.literal(head), g.json_value(g.parameters(function)), g.literal("}")])
