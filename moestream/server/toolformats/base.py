"""The shared machinery of the output parsers: generated text in (arbitrary chunks), events out.

A parser is a small state machine over a buffer of text not yet decided. Each state is a method that consumes
what it can from the front of the buffer and returns True when it made progress (so the driver runs again) or
False when it must see more text. Text that might be the start of a marker (a tool-call opener, `</think>`) is
held back until the next chunk decides it, as a stop-string matcher does, so nothing is emitted and then taken
back. `finish()` runs the states once more knowing no text will come: held text is flushed, a call whose
arguments are complete is ended, any other unfinished call is abandoned (its raw text becomes Text).

Reasoning (`<think>`...`</think>`, or the family's own `reasoning_tags`) is split here, so every family gets it;
`thinking=True` means the prompt already opened the block. Whitespace that only separates blocks (after
`</think>`, between calls, before a call opener) is dropped; everything else is emitted as generated.

Families set `call_openers` (markers that start a call in ordinary text) and implement `_open_call(marker)`
returning the state that reads the call; `_branch`, `_read_json_args` and `_read_call_object` cover most of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import regex

from .events import CallAbandoned, CallArgs, CallEnd, CallStart, Event, Reasoning, Text, merged
from .jsonscan import JsonCallReader, JsonError, JsonScanner

State = Callable[[], bool]
Option = tuple["regex.Pattern[str]", Callable[["regex.Match[str]"], None]]


class OutputParser:
    family = ""
    call_openers: tuple[str, ...] = ()
    reasoning_tags: tuple[tuple[str, str], ...] = (("<think>", "</think>"),)
    # Markers a tokenizer may hold as single tokens; call_grammar writes those given in `special` as tokens.
    grammar_markers: tuple[str, ...] = ()

    def __init__(self, tools: list[dict] | None, thinking: bool = False):
        self.tools = tool_table(tools)
        self._buffer = ""  # generated text not yet decided
        self._events: list[Event] = []
        self._final = False
        self._calls = 0  # calls started in this reply
        self._index: int | None = None  # index of the call being read, once its name is known
        self._raw: str | None = None  # text of the call being read, returned as Text if it is abandoned
        self._trim = False  # drop leading whitespace of the next Text/Reasoning (it follows a block)
        self._state: State = self._content
        if thinking and self.reasoning_tags:
            self._enter_reasoning(tuple(close for _, close in self.reasoning_tags))

    def feed(self, text: str) -> list[Event]:
        self._buffer += text
        return self._run()

    def finish(self) -> list[Event]:
        """End of generation: flush held-back text and settle an unfinished call (never raises)."""
        self._final = True
        events = self._run()
        if self._buffer:  # every state consumes all at the end; this is a safety net, not a path
            events.append(Text(self._buffer))
            self._buffer = ""
        return events

    @classmethod
    def call_grammar(cls, tools: list[dict], name: str | None, parallel: bool,
                     special: dict[str, int] | None = None) -> str:
        """Lark (llguidance) for exactly one call (parallel=False) or one or more, to `name` or any tool, the
        arguments constrained by the tool's `parameters` schema. `special` maps those of the family's
        `grammar_markers` that the model's tokenizer holds as single tokens to their ids (written as `<[id]>`,
        which a special token needs); other markers are written as text. Unknown `name`, no tools: ConfigError."""
        raise NotImplementedError

    # --- driver ----------------------------------------------------------------------------------------------

    def _run(self) -> list[Event]:
        while self._state():
            pass
        events, self._events = merged(self._events), []
        return events

    @property
    def _content(self) -> State:
        """The state for ordinary content: at the start and after reasoning ends."""
        return self._text

    def _open_call(self, marker: str) -> None:
        """Switch to the state that reads a call after `marker` (one of call_openers)."""
        raise NotImplementedError

    # --- buffer and events -------------------------------------------------------------------------------------

    def _take(self, n: int) -> str:
        piece, self._buffer = self._buffer[:n], self._buffer[n:]
        if self._raw is not None:
            self._raw += piece
        return piece

    def _emit_text(self, text: str) -> None:
        self._emit(Text, text)

    def _emit_reasoning(self, text: str) -> None:
        self._emit(Reasoning, text)

    def _emit(self, kind: type, text: str) -> None:
        if self._trim:
            text = text.lstrip()
        if text:
            self._trim = False
            self._events.append(kind(text))

    def _start_call(self, name: str) -> None:
        self._index, self._calls = self._calls, self._calls + 1
        self._events.append(CallStart(self._index, name))

    def _call_args(self, fragment: str) -> None:
        self._events.append(CallArgs(self._index, fragment))

    def _end_call(self, then: State) -> None:
        self._events.append(CallEnd(self._index))
        self._index, self._raw, self._trim = None, None, True
        self._state = then

    def _abandon(self) -> None:
        """What was read as a call cannot be completed: a started call ends as abandoned, with its raw text;
        text read before a name was known is content after all."""
        if self._index is not None:
            if self._final:  # generation ended inside the call: what is left unread belongs to it
                self._raw, self._buffer = (self._raw or "") + self._buffer, ""
            self._events.append(CallAbandoned(self._index, self._raw or ""))
        elif self._raw:
            self._events.append(Text(self._raw))
        self._index, self._raw, self._trim = None, None, False
        self._state = self._text

    # --- states ------------------------------------------------------------------------------------------------

    def _markers(self) -> list[str]:
        openers = [opener for opener, _ in self.reasoning_tags]
        return openers + list(self.call_openers if self.tools else ())

    def _text(self) -> bool:
        """Ordinary content, until a reasoning or call opener."""
        markers = self._markers()
        pos, marker = earliest(self._buffer, markers)
        if marker is None:
            return self._pass(markers, self._emit_text)
        content = self._buffer[:pos].rstrip()
        self._emit_text(content)
        spacing, self._buffer = self._buffer[len(content):pos], self._buffer[pos + len(marker):]
        closers = dict(self.reasoning_tags)
        if marker in closers:
            self._enter_reasoning((closers[marker],))
        else:
            self._raw = spacing + marker  # all of it comes back if this turns out not to be a call
            self._open_call(marker)
        return True

    def _enter_reasoning(self, closers: tuple[str, ...]) -> None:
        self._trim = True
        self._state = functools.partial(self._pass_until, closers, self._emit_reasoning, self._content)

    def _pass_until(self, closers: Sequence[str], emit: Callable[[str], None], then: State) -> bool:
        """Stream text to `emit` until one of `closers`, which is consumed; then switch to `then`."""
        pos, closer = earliest(self._buffer, closers)
        if closer is None:
            return self._pass(closers, emit)
        emit(self._buffer[:pos].rstrip())
        self._buffer = self._buffer[pos + len(closer):]
        self._trim, self._state = True, then
        return True

    def _pass(self, markers: Sequence[str], emit: Callable[[str], None]) -> bool:
        """Emit the buffer but for a tail that may begin one of `markers`, and the whitespace before it."""
        keep = 0
        if markers and not self._final:
            head = self._buffer[: len(self._buffer) - held_back(self._buffer, markers)]
            keep = len(self._buffer) - len(head.rstrip())
        out, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
        emit(out)
        return bool(out)

    def _branch(self, options: Sequence[Option], otherwise: Callable[[], None]) -> bool:
        """The first option whose pattern matches the buffer's start wins: its match is consumed and its handler
        runs. An option that could still match with more text makes the parser wait; when none can match,
        `otherwise` runs (it must change the state)."""
        for pattern, handler in options:
            match = pattern.match(self._buffer, partial=not self._final)
            if match is None:
                continue
            if match.partial:
                return False
            self._take(match.end())
            handler(match)
            return True
        otherwise()
        return True

    def _goto(self, state: State) -> Callable[[Any], None]:
        """A `_branch` handler that only switches state."""
        return lambda _match: setattr(self, "_state", state)

    def _skipping(self, pattern: regex.Pattern[str], then: State) -> State:
        """A state that consumes `pattern` if it comes next (an optional closer), then switches to `then`. A closer
        cut off by the end of generation ('</tool_ca') is framing too: dropped, not turned into content."""
        def skip() -> bool:
            match = pattern.match(self._buffer, partial=True)
            if match is not None and match.partial and not self._final:
                return False  # more text decides it
            if match is not None:
                self._take(match.end())
            self._state = then
            return True
        return skip

    def _read_json_args(self, then: State) -> None:
        """Next: a JSON object of arguments, streamed as CallArgs; the call ends with it."""
        self._state = functools.partial(self._before_args, then)

    def _before_args(self, then: State) -> bool:
        """Whitespace, then the arguments' '{'; anything else means this is not a call."""
        stripped = self._buffer.lstrip()
        self._take(len(self._buffer) - len(stripped))
        if stripped.startswith("{"):
            self._state = functools.partial(self._json_args, JsonScanner(), then)
        elif stripped or self._final:
            self._abandon()
        else:
            return False
        return True

    def _json_args(self, scanner: JsonScanner, then: State) -> bool:
        try:
            n = scanner.push(self._buffer)
        except JsonError as error:  # what was read before the bad character stays with the abandoned call
            if error.consumed:
                self._call_args(self._take(error.consumed))
            self._abandon()
            return True
        if n:
            self._call_args(self._take(n))
        if scanner.done:
            self._end_call(then)
        elif self._final:
            self._abandon()
        else:
            return n > 0
        return True

    def _read_call_object(self, then: State, **reader_options: Any) -> None:
        """Next: a JSON call object {"name": ..., "arguments": {...}}; the call ends with it."""
        reader = JsonCallReader(self._start_call, self._call_args, **reader_options)
        self._state = functools.partial(self._call_object, reader, then)

    def _call_object(self, reader: JsonCallReader, then: State) -> bool:
        try:
            n = reader.push(self._buffer)
        except JsonError as error:
            self._take(error.consumed)
            self._abandon()
            return True
        self._take(n)
        if reader.done or (self._final and reader.args_done):
            self._end_call(then)
        elif self._final:
            self._abandon()
        else:
            return n > 0
        return True


def tool_table(tools: list[dict] | None) -> dict[str, dict]:
    """name -> function description ({"name", "description", "parameters"}), from OpenAI-style tools."""
    table = {}
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            table[function["name"]] = function
    return table


def earliest(text: str, markers: Sequence[str]) -> tuple[int, str | None]:
    """Position and text of the first marker in `text` (the longest one where several start there)."""
    best, found = len(text), None
    for marker in markers:
        pos = text.find(marker)
        if pos >= 0 and (pos < best or (pos == best and found is not None and len(marker) > len(found))):
            best, found = pos, marker
    return best, found


def held_back(text: str, markers: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some marker."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best
