"""DeepSeek V3 / R1 / V3.1 format, with its fullwidth-bar markers (｜ is U+FF5C, ▁ is U+2581):

    V3.1:      <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
    V3 and R1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{json}\n```<｜tool▁call▁end｜>...

Both forms are read (the older one is told apart by the word `function` before the separator followed by a name
and a code fence), so one parser serves every DeepSeek template. A call may also open with
<｜tool▁call▁begin｜> alone, as models sometimes drop the outer marker. Reasoning is <think>...</think>.
"""

from __future__ import annotations

import functools

import regex

from . import grammar as g
from .base import OutputParser

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
_CALL_BEGIN = regex.compile(r"\s*" + regex.escape(CALL_BEGIN))
_CALLS_END = regex.compile(r"\s*" + regex.escape(CALLS_END))
_FENCED_HEAD = regex.compile(r"\s*function" + regex.escape(SEP) + r"\s*([\w.\-]+)[ \t]*\n```(?:json)?[ \t]*\n")
_HEAD = regex.compile(r"\s*([^\s<｜]+)\s*" + regex.escape(SEP))
_FENCED_END = regex.compile(r"\s*```\s*" + regex.escape(CALL_END))
_CALL_END = regex.compile(r"\s*" + regex.escape(CALL_END))


class DeepSeekV3Parser(OutputParser):
    family = "deepseek_v3"
    call_openers = (CALLS_BEGIN, CALL_BEGIN)
    grammar_markers = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)

    def _open_call(self, marker: str) -> None:
        if marker == CALLS_BEGIN:
            self._state = functools.partial(self._branch, [(_CALL_BEGIN, self._goto(self._head)),
                                                           (_CALLS_END, self._goto(self._text))], self._abandon)
        else:
            self._state = self._head

    def _head(self) -> bool:
        return self._branch([(_FENCED_HEAD, self._fenced), (_HEAD, self._plain)], self._abandon)

    def _fenced(self, match: regex.Match[str]) -> None:
        self._start_call(match.group(1))
        self._read_json_args(self._skipping(_FENCED_END, self._next))

    def _plain(self, match: regex.Match[str]) -> None:
        self._start_call(match.group(1))
        self._read_json_args(self._skipping(_CALL_END, self._next))

    def _next(self) -> bool:
        """After a call: another one, the end of the block, or (leniently) ordinary text."""
        return self._branch([(_CALL_BEGIN, self._another), (_CALLS_END, self._goto(self._text))],
                            lambda: setattr(self, "_state", self._text))

    def _another(self, _match: regex.Match[str]) -> None:
        self._raw = CALL_BEGIN
        self._state = self._head

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        t = functools.partial(g.token, special=special)
        bodies = []
        for function in g.chosen_tools(tools, name):
            args = g.json_value(g.parameters(function))
            plain = [t(CALL_BEGIN), g.literal(function["name"]), t(SEP), args, t(CALL_END)]
            fenced = [t(CALL_BEGIN), g.literal("function"), t(SEP), g.literal(function["name"] + "\n```json\n"),
                      args, g.literal("\n```"), t(CALL_END)]
            bodies.append(f"({' '.join(plain)}) | ({' '.join(fenced)})")
        return g.calls_grammar(bodies, parallel, g.literal("\n") + "?", before=t(CALLS_BEGIN), after=t(CALLS_END))
