"""GLM-4.5 / GLM-4.6 format: the function name right after the opener, then key/value pairs as raw text,

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

Values are written as they are for strings and as JSON for the rest (the template uses `tojson`); each pair
becomes a JSON member, typed by the tool's schema, when its </arg_value> arrives; a call the end of generation
cuts off after a complete pair is ended there. Reasoning is <think>...</think>.
"""

from __future__ import annotations

import functools

import regex

from . import grammar as g
from .base import OutputParser
from .xmlargs import ArgsWriter, params_items, value_items

OPEN, CLOSE = "<tool_call>", "</tool_call>"
KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE = "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"
_NAME = regex.compile(r"\s*([^\s<]+)[ \t]*(?:\n|(?=<))")
_ARG = regex.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>", regex.DOTALL)
_END = regex.compile(r"\s*</tool_call>")


class Glm45Parser(OutputParser):
    family = "glm45"
    call_openers = (OPEN,)
    grammar_markers = (OPEN, CLOSE, KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE)
    _args: ArgsWriter  # the arguments of the call being read

    def _open_call(self, marker: str) -> None:
        self._state = functools.partial(self._branch, [(_NAME, self._name)], self._abandon)

    def _name(self, match: regex.Match[str]) -> None:
        self._start_call(match.group(1))
        self._args = ArgsWriter(self.tools.get(match.group(1)))
        self._state = self._pairs

    def _pairs(self) -> bool:
        """Between pairs: another one, or the end (generation ending here ends the call too)."""
        return self._branch([(_ARG, self._key), (_END, self._end)],
                            lambda: self._end(None) if self._final else self._abandon())

    def _key(self, match: regex.Match[str]) -> None:
        self._state = functools.partial(self._value, match.group(1).strip())

    def _value(self, key: str) -> bool:
        pos = self._buffer.find(VALUE_CLOSE)
        if pos < 0:
            if self._final:
                self._abandon()
            return self._final
        self._call_args(self._args.param(key, self._take(pos)))
        self._take(len(VALUE_CLOSE))
        self._state = self._pairs
        return True

    def _end(self, _match: regex.Match[str] | None) -> None:
        self._call_args(self._args.close())
        self._end_call(self._text)

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        bodies, rules = [], []
        for i, function in enumerate(g.chosen_tools(tools, name)):
            params, extra = params_items(f"p{i}", function, _pair_item(special))
            head = g.literal(function["name"] + "\n")
            bodies.append(" ".join(filter(None, [g.token(OPEN, special), head, params, g.token(CLOSE, special)])))
            rules += extra
        return g.calls_grammar(bodies, parallel, g.literal("\n"), rules)


def _pair_item(special: dict[str, int] | None):
    def item(key: str, rule: str, schema: dict) -> tuple[str, list[str]]:
        value, rules = value_items(rule, schema, VALUE_CLOSE, special)
        tags = [g.token(KEY_OPEN, special), g.literal(key), g.token(KEY_CLOSE, special), g.literal("\n"),
                g.token(VALUE_OPEN, special), value, g.literal("\n")]
        return " ".join(tags), rules
    return item
