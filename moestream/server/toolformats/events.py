"""What a parser makes of the model's text: content, reasoning, and tool calls in pieces.

A call streams as CallStart (its name known), CallArgs fragments (JSON text; joined, they are the JSON object of
its arguments) and CallEnd. `index` counts the calls of one reply from 0. A call that cannot be completed (its
arguments break off, or turn out not to be JSON) ends with CallAbandoned instead, carrying its raw text: its start
may already have been sent to a client, which cannot be taken back, so the reply keeps it as a call (OpenAI's
too: a call cut off by the token limit arrives with partial arguments) and the raw text is not repeated as
content. Text read as a possible call before any name was known goes back out as Text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    text: str  # ordinary assistant content


@dataclass(frozen=True)
class Reasoning:
    text: str  # thinking text (<think>...</think>, harmony's analysis channel)


@dataclass(frozen=True)
class CallStart:
    index: int
    name: str


@dataclass(frozen=True)
class CallArgs:
    index: int
    fragment: str


@dataclass(frozen=True)
class CallEnd:
    index: int


@dataclass(frozen=True)
class CallAbandoned:
    index: int
    raw: str  # the call's text as generated


Event = Text | Reasoning | CallStart | CallArgs | CallEnd | CallAbandoned


def merged(events: list[Event]) -> list[Event]:
    """Adjacent Text, Reasoning or same-call CallArgs events joined into one (fewer, larger stream chunks)."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, (Text, Reasoning)) and type(last) is type(event):
            out[-1] = type(event)(last.text + event.text)
        elif isinstance(event, CallArgs) and isinstance(last, CallArgs) and last.index == event.index:
            out[-1] = CallArgs(event.index, last.fragment + event.fragment)
        else:
            out.append(event)
    return out
