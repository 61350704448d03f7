"""OpenAI harmony format (gpt-oss): the reply is a sequence of messages, each a header, <|message|> and a body,

    <|channel|>analysis<|message|>thinking...<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "P"}<|call|>
    <|start|>assistant<|channel|>final<|message|>The answer.<|return|>

The analysis channel is reasoning; a message addressed `to=functions.NAME` (before or after <|channel|>; the
template renders it before) is a call whose body is the JSON arguments; every other body (final, commentary
preambles) is Text. The first header follows the prompt's `<|start|>assistant`, so it begins at <|channel|> or
` to=`. Text fed here includes the control tokens' text. A header cut off by the end of generation is dropped (it
is framing, not content); output that does not start like a header is all Text.
"""

from __future__ import annotations

import functools

import regex

from . import grammar as g
from .base import OutputParser, State

START, CHANNEL, MESSAGE, CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
END, CALL, RETURN = "<|end|>", "<|call|>", "<|return|>"
_HEADER = regex.compile(r"\s*(?:<\|start\|>[^<\s]*)?((?:\s*to=[^<\s]+)?\s*<\|channel\|>[^<]*(?:<\|constrain\|>[^<]*)?)"
                        r"<\|message\|>")
_STRAY_END = regex.compile(r"\s*(?:<\|end\|>|<\|return\|>|<\|call\|>)")
_CALL_END = regex.compile(r"\s*(?:<\|call\|>|<\|end\|>)")
_RECIPIENT = regex.compile(r"to=([^\s<]+)")
_CHANNEL = regex.compile(r"<\|channel\|>\s*([^\s<]+)")
_BODY_ENDS = (END, RETURN, CALL)
_FUNCTIONS = "functions."


class HarmonyParser(OutputParser):
    family = "harmony"
    reasoning_tags = ()
    grammar_markers = (START, CHANNEL, MESSAGE, CONSTRAIN, END, CALL, RETURN)

    @property
    def _content(self) -> State:
        return self._header

    def _header(self) -> bool:
        return self._branch([(_STRAY_END, self._goto(self._header)), (_HEADER, self._message)], self._not_harmony)

    def _message(self, match: regex.Match[str]) -> None:
        head = match.group(1)
        recipient = _RECIPIENT.search(head)
        channel = _CHANNEL.search(head)
        name = recipient.group(1) if recipient else ""
        if name.startswith(_FUNCTIONS) and self.tools:
            self._raw = match.group(0)
            self._start_call(name[len(_FUNCTIONS):])
            self._read_json_args(self._skipping(_CALL_END, self._header))
        else:
            emit = self._emit_reasoning if channel and channel.group(1) == "analysis" else self._emit_text
            self._trim = True
            self._state = functools.partial(self._pass_until, _BODY_ENDS, emit, self._header)

    def _not_harmony(self) -> None:
        partial = _HEADER.match(self._buffer, partial=True)
        if self._final and partial is not None and partial.partial:
            self._buffer = ""  # a header the end of generation cut off
        self._state = self._text

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        t = functools.partial(g.token, special=special)
        bodies = []
        for function in g.chosen_tools(tools, name):
            to = "to=" + _FUNCTIONS + function["name"]
            before = f"{g.literal(' ' + to)} {t(CHANNEL)} {g.literal('commentary')} constrain? {t(MESSAGE)}"
            after = f"{t(CHANNEL)} {g.literal('commentary ' + to)} constrain? {t(MESSAGE)}"
            bodies.append(f"({before} | {after}) {g.json_value(g.parameters(function))} {t(CALL)}")
        constrain = f"constrain: {g.literal(' json')} | {g.literal(' ')} {t(CONSTRAIN)} {g.literal('json')}"
        return g.calls_grammar(bodies, parallel, f"{t(START)} {g.literal('assistant')}", [constrain])
