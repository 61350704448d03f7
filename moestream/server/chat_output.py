"""Generated tokens -> a chat reply's parts: content, reasoning and tool calls, as events while streaming and
gathered for the whole reply. Stop strings are cut first (on the raw text), then the family's parser splits the
rest (chat_plan.py decides whether there is one)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..engine import Tokenizer
from .textstream import TextStream
from .toolformats import CallAbandoned, CallArgs, CallEnd, CallStart, Event, OutputParser, Reasoning, Text


class ChatOutput:
    def __init__(self, tokenizer: Tokenizer, stops: tuple[str, ...], parser: OutputParser | None):
        # a parser sees control tokens' text: harmony's channel markers are control tokens
        self.text = TextStream(tokenizer, stops, skip_special=parser is None)
        self.parser = parser

    @property
    def stopped(self) -> bool:
        return self.text.stopped

    @property
    def stopped_by(self) -> str | None:
        return self.text.stopped_by if self.text.stopped else None

    def push(self, token: int) -> list[Event]:
        return self._split(self.text.push(token))

    def flush(self) -> list[Event]:
        events = self._split(self.text.flush())
        return events + (self.parser.finish() if self.parser is not None else [])

    def _split(self, text: str) -> list[Event]:
        if self.parser is None:
            return [Text(text)] if text else []
        return self.parser.feed(text) if text else []


@dataclass
class Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    ended: bool = False
    abandoned: bool = False  # it broke off (token limit, not JSON): its arguments are what arrived


@dataclass
class ChatParts:
    """Everything a reply said so far, by kind."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, Call] = field(default_factory=dict)

    def absorb(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Text):
                self.content.append(ev.text)
            elif isinstance(ev, Reasoning):
                self.reasoning.append(ev.text)
            elif isinstance(ev, CallStart):
                self.calls[ev.index] = Call(new_call_id(), ev.name)
            elif isinstance(ev, CallArgs):
                self.calls[ev.index].arguments.append(ev.fragment)
            elif isinstance(ev, CallEnd):
                self.calls[ev.index].ended = True
            elif isinstance(ev, CallAbandoned):
                self.calls[ev.index].abandoned = True

    @property
    def finished_calls(self) -> list[Call]:
        """Calls the parser ended."""
        return [c for c in self.calls.values() if c.ended]

    @property
    def reported_calls(self) -> list[Call]:
        """Every call that started: a stream has already announced it, so the whole reply reports it too (an
        abandoned one with the arguments that arrived, as OpenAI reports a call cut off by the token limit)."""
        return list(self.calls.values())


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
