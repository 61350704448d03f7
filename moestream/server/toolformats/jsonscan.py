"""Incremental JSON reading for tool calls that stream: where a value ends, and whether it is valid, known character
by character, so arguments can be passed on while they are generated and a broken call is noticed at the
character that breaks it (not at the end of the reply).

`JsonScanner` follows one JSON value (RFC 8259 syntax, no decoding). `JsonCallReader` walks one call object such
as {"name": "f", "arguments": {...}}: it reports the name as soon as it is complete and passes the arguments'
text on as it arrives when the name came first (the usual order); arguments that come before the name, or are
sent as a JSON string holding the object, are passed on once both are known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")
_WS = frozenset(" \t\n\r")
_ARGS_KEYS = ("arguments", "parameters")  # Hermes/Qwen/Mistral write the first, Llama 3 the second


class JsonError(ValueError):
    """The text cannot be (the rest of) the JSON expected here. `consumed`: how many characters of the text
    pushed were read before the one that does not fit."""

    consumed = 0


class JsonScanner:
    """One JSON value, followed character by character. Leading whitespace belongs to the value."""

    def __init__(self) -> None:
        self._stack: list[str] = []  # open containers, '{' or '['
        self._mode = "value"
        self._rest = ""  # number text so far, or the letters a literal still needs
        self._key = False  # the string being read is an object key
        self._hex = 0  # \uXXXX digits still expected
        self.done = False

    def push(self, text: str) -> int:
        """How many leading characters of `text` belong to the value (all of them while it is open); raises
        JsonError at the first character that cannot. A number ends at the first character after it."""
        for i, ch in enumerate(text):
            try:
                if self.done or not self.step(ch):
                    return i
            except JsonError as error:
                error.consumed = i
                raise
        return len(text)

    def step(self, ch: str) -> bool:
        """Consume `ch`; False when the value had ended before it (only a top-level number ends that way)."""
        return _MODES[self._mode](self, ch)

    def _value(self, ch: str) -> bool:
        if ch in _WS:
            return True
        if ch in "{[":
            self._stack.append(ch)
            self._mode = "key_or_close" if ch == "{" else "value_or_close"
        elif ch == '"':
            self._mode, self._key = "string", False
        elif ch == "-" or ch.isdigit():
            self._mode, self._rest = "number", ch
        elif ch in _LITERALS:
            self._mode, self._rest = "literal", _LITERALS[ch]
        else:
            raise JsonError(f"unexpected {ch!r} where a JSON value starts")
        return True

    def _key_or_close(self, ch: str) -> bool:
        if ch == "}":
            return self._close(ch)
        return self._key_start(ch)

    def _key_start(self, ch: str) -> bool:
        if ch in _WS:
            return True
        if ch != '"':
            raise JsonError(f"unexpected {ch!r} where an object key starts")
        self._mode, self._key = "string", True
        return True

    def _colon(self, ch: str) -> bool:
        if ch in _WS:
            return True
        if ch != ":":
            raise JsonError(f"expected ':' after an object key, not {ch!r}")
        self._mode = "value"
        return True

    def _value_or_close(self, ch: str) -> bool:
        if ch == "]":
            return self._close(ch)
        if ch in _WS:
            return True
        self._mode = "value"
        return self._value(ch)

    def _after(self, ch: str) -> bool:
        if ch in _WS:
            return True
        if ch == ",":
            self._mode = "key" if self._stack[-1] == "{" else "value"
            return True
        return self._close(ch)

    def _close(self, ch: str) -> bool:
        if ch != {"{": "}", "[": "]"}[self._stack[-1]]:
            raise JsonError(f"unexpected {ch!r} inside a JSON {'object' if self._stack[-1] == '{' else 'array'}")
        self._stack.pop()
        self._value_done()
        return True

    def _string(self, ch: str) -> bool:
        if ch == '"':
            if self._key:
                self._mode = "colon"
            else:
                self._value_done()
        elif ch == "\\":
            self._mode = "escape"
        elif ord(ch) < 0x20:
            raise JsonError("a control character inside a JSON string")
        return True

    def _escape(self, ch: str) -> bool:
        if ch not in _ESCAPES:
            raise JsonError(f"invalid escape \\{ch} in a JSON string")
        self._mode, self._hex = ("unicode", 4) if ch == "u" else ("string", 0)
        return True

    def _unicode(self, ch: str) -> bool:
        if ch not in _HEX:
            raise JsonError("a \\u escape needs four hex digits")
        self._hex -= 1
        if not self._hex:
            self._mode = "string"
        return True

    def _number(self, ch: str) -> bool:
        if ch in _NUMBER_CHARS:
            self._rest += ch
            return True
        if not _NUMBER.fullmatch(self._rest):
            raise JsonError(f"invalid JSON number {self._rest!r}")
        self._value_done()
        return False if self.done else self._after(ch)

    def _literal(self, ch: str) -> bool:
        if ch != self._rest[0]:
            raise JsonError(f"unexpected {ch!r} in a JSON literal")
        self._rest = self._rest[1:]
        if not self._rest:
            self._value_done()
        return True

    def _value_done(self) -> None:
        self._mode = "after" if self._stack else "end"
        self.done = not self._stack


_MODES: dict[str, Callable[[JsonScanner, str], bool]] = {
    "value": JsonScanner._value, "key_or_close": JsonScanner._key_or_close, "key": JsonScanner._key_start,
    "colon": JsonScanner._colon, "value_or_close": JsonScanner._value_or_close, "after": JsonScanner._after,
    "string": JsonScanner._string, "escape": JsonScanner._escape, "unicode": JsonScanner._unicode,
    "number": JsonScanner._number, "literal": JsonScanner._literal,
}


class JsonCallReader:
    """One call object, {"name": ..., "arguments" or "parameters": {...}} in any key order, other keys ("id",
    "type") skipped.

    `start(name)` is called once the name is known, `args(fragment)` with the arguments' JSON text. With `known`,
    a name outside it is a JsonError (for formats where only the name tells a call from ordinary JSON)."""

    def __init__(self, start: Callable[[str], None], args: Callable[[str], None],
                 known: Collection[str] | None = None):
        self._start, self._args, self._known = start, args, known
        self._mode = "open"
        self._scanner = JsonScanner()
        self._raw = ""  # text of the key or value being read (when it is kept)
        self._role = ""  # what the current value is: "key", "name", "args" or "skip" ("" between values)
        self._key_text = ""  # the key of the member being read
        self._streaming = False  # the current value is the arguments, passed on as they come
        self.name: str | None = None
        self._pending_args: str | None = None  # arguments seen before the name
        self.args_done = False
        self.done = False

    def push(self, text: str) -> int:
        """How many leading characters of `text` belong to the call object; raises JsonError."""
        fragment: list[str] = []
        try:
            for i, ch in enumerate(text):
                if self.done:
                    return i
                self._step_at(i, ch, fragment)
            return len(text)
        finally:
            if fragment:
                self._args("".join(fragment))

    def _step_at(self, i: int, ch: str, fragment: list[str]) -> None:
        try:
            self._step(ch, fragment)
        except JsonError as error:
            error.consumed = i
            raise

    def _step(self, ch: str, fragment: list[str]) -> None:
        if self._mode == "value":
            self._value_char(ch, fragment)
        elif ch in _WS:
            return
        elif self._mode == "open":
            self._expect(ch, "{", "key_or_close")
        elif self._mode in ("key", "key_or_close"):
            self._key_char(ch, fragment)
        elif self._mode == "colon":
            self._expect(ch, ":", "value")
        else:  # "sep"
            self._sep_char(ch)

    def _expect(self, ch: str, wanted: str, mode: str) -> None:
        if ch != wanted:
            raise JsonError(f"expected {wanted!r} in a tool call object, not {ch!r}")
        self._mode = mode

    def _key_char(self, ch: str, fragment: list[str]) -> None:
        if ch == "}" and self._mode == "key_or_close":
            return self._close()
        if ch != '"':
            raise JsonError(f"expected a key in a tool call object, not {ch!r}")
        self._begin_value("key", ch)
        self._scan(ch, fragment)

    def _value_char(self, ch: str, fragment: list[str]) -> None:
        if not self._role:  # whitespace before a member's value, or its first character
            if ch in _WS:
                return
            self._begin_value(self._value_role(), ch)
        self._scan(ch, fragment)

    def _begin_value(self, role: str, ch: str) -> None:
        if role == "args" and ch not in '{"':
            raise JsonError("tool call arguments must be a JSON object")
        self._role, self._raw, self._scanner = role, "", JsonScanner()
        self._streaming = role == "args" and self.name is not None and ch == "{"
        self._mode = "value"

    def _scan(self, ch: str, fragment: list[str]) -> None:
        if not self._scanner.step(ch):  # a number ended before ch
            self._end_value()
            return self._step(ch, fragment)
        if self._streaming:
            fragment.append(ch)
        else:
            self._raw += ch
        if self._scanner.done:
            self._end_value()

    def _value_role(self) -> str:
        key = self._key_text
        return "name" if key == "name" else "args" if key in _ARGS_KEYS else "skip"

    def _end_value(self) -> None:
        role, raw = self._role, self._raw
        self._role, self._raw = "", ""
        if role == "key":
            self._key_text, self._mode = json.loads(raw), "colon"
            return
        self._mode = "sep"
        if role == "name":
            self._got_name(json.loads(raw))
        elif role == "args":
            self._got_args(raw)

    def _got_name(self, name: object) -> None:
        if not isinstance(name, str) or not name or (self._known is not None and name not in self._known):
            raise JsonError(f"{name!r} is not the name of a tool")
        self.name = name
        self._start(name)
        if self._pending_args is not None:
            self._args(self._pending_args)
            self.args_done = True

    def _got_args(self, raw: str) -> None:
        if self._streaming:
            self.args_done = True
            return
        text = _object_text(raw)
        if self.name is None:
            self._pending_args = text
        else:
            self._args(text)
            self.args_done = True

    def _sep_char(self, ch: str) -> None:
        if ch == ",":
            self._mode = "key"
        elif ch == "}":
            self._close()
        else:
            raise JsonError(f"expected ',' or '}}' in a tool call object, not {ch!r}")

    def _close(self) -> None:
        if self.name is None:
            raise JsonError("a JSON object without a tool name is not a tool call")
        if not self.args_done:
            self._args("{}")
            self.args_done = True
        self.done = True


def _object_text(raw: str) -> str:
    """The arguments' JSON object text, from its raw text or from a JSON string that holds it."""
    if not raw.startswith('"'):
        return raw
    text = json.loads(raw)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise JsonError("tool call arguments given as a string must hold a JSON object")
    return text
