"""Hermes format (NousResearch Hermes 2/3, Qwen2.5, Qwen3, QwQ): each call is a JSON object in tags,

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

several calls one after another, separated by a newline. Also the default for templates that do not reveal a
format: it is the most widespread, and its opener is unlikely in ordinary text.
"""

from __future__ import annotations

import json

import regex

from . import grammar as g
from .base import OutputParser

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CLOSE = regex.compile(r"\s*" + regex.escape(CLOSE))


class HermesParser(OutputParser):
    family = "hermes"
    call_openers = (OPEN,)
    grammar_markers = (OPEN, CLOSE)

    def _open_call(self, marker: str) -> None:
        self._read_call_object(self._skipping(_CLOSE, self._text))

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        bodies = [_call(function, special) for function in g.chosen_tools(tools, name)]
        return g.calls_grammar(bodies, parallel, g.literal("\n"))


def _call(function: dict, special: dict[str, int] | None) -> str:
    head = '\n{"name": ' + json.dumps(function["name"], ensure_ascii=False) + ', "arguments": '
    return " ".join([g.token(OPEN, special), g.literal(head), g.json_value(g.parameters(function)),
                     g.literal("}\n"), g.token(CLOSE, special)])
