"""Qwen3-Coder / Qwen3.5 XML format: each call names its function and writes every parameter as raw text,

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

One newline after the parameter tag and one before its closing tag are the format's, not the value's. The call
starts as soon as the function tag is complete; each parameter is converted to JSON (typed by the tool's
schema) when its closing tag arrives. Lenient where models slip: a value without </parameter> ends at the
next parameter or </function> tag that starts a line; a missing </function> ends at </tool_call>, or at the end
of generation after a complete parameter.
"""

from __future__ import annotations

import functools

import regex

from . import grammar as g
from .base import OutputParser
from .xmlargs import ArgsWriter, params_items, value_items

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FUNCTION = regex.compile(r"\s*<function=([^>\n]+)>")
_PARAMETER = regex.compile(r"\s*<parameter=([^>\n]+)>")
_END_FUNCTION = regex.compile(r"\s*</function>")
_END_CALL = regex.compile(r"\s*</tool_call>")
# A value ends at its closing tag; one that lacks it, at the next tag of the format that starts a line.
_VALUE_ENDS = ("</parameter>", "\n<parameter=", "\n</function>", "\n</tool_call>")


class Qwen3CoderParser(OutputParser):
    family = "qwen3_coder"
    call_openers = (OPEN,)
    grammar_markers = (OPEN, CLOSE)
    _args: ArgsWriter  # the arguments of the call being read

    def _open_call(self, marker: str) -> None:
        self._state = functools.partial(self._branch, [(_FUNCTION, self._function)], self._abandon)

    def _function(self, match: regex.Match[str]) -> None:
        name = match.group(1).strip()
        self._start_call(name)
        self._args = ArgsWriter(self.tools.get(name))
        self._state = self._params

    def _params(self) -> bool:
        """Between parameters: another one, or the end (generation ending here ends the call too)."""
        return self._branch([(_PARAMETER, self._parameter), (_END_FUNCTION, self._end_function),
                             (_END_CALL, self._end_without_function)],
                            lambda: self._end_without_function(None) if self._final else self._abandon())

    def _parameter(self, match: regex.Match[str]) -> None:
        self._state = functools.partial(self._value, match.group(1).strip())

    def _value(self, key: str) -> bool:
        pos = min((p for p in (self._buffer.find(end) for end in _VALUE_ENDS) if p >= 0), default=-1)
        if pos < 0:
            if self._final:
                self._abandon()
            return self._final
        raw = self._take(pos)
        raw = raw[1:] if raw.startswith("\n") else raw
        raw = raw[:-1] if raw.endswith("\n") else raw
        self._call_args(self._args.param(key, raw))
        if self._buffer.startswith("</parameter>"):
            self._take(len("</parameter>"))
        self._state = self._params
        return True

    def _end_function(self, _match: regex.Match[str]) -> None:
        self._call_args(self._args.close())
        self._end_call(self._skipping(_END_CALL, self._text))

    def _end_without_function(self, _match: regex.Match[str] | None) -> None:
        self._call_args(self._args.close())
        self._end_call(self._text)

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        bodies, rules = [], []
        for i, function in enumerate(g.chosen_tools(tools, name)):
            params, extra = params_items(f"p{i}", function, _param_item(special))
            head = g.literal(f"\n<function={function['name']}>\n")
            bodies.append(" ".join(filter(None, [g.token(OPEN, special), head, params,
                                                 g.literal("</function>\n"), g.token(CLOSE, special)])))
            rules += extra
        return g.calls_grammar(bodies, parallel, g.literal("\n"), rules)


def _param_item(special: dict[str, int] | None):
    def item(key: str, rule: str, schema: dict) -> tuple[str, list[str]]:
        value, rules = value_items(rule, schema, "\n</parameter>", special)
        return " ".join([g.literal(f"<parameter={key}>\n"), value, g.literal("\n")]), rules
    return item
