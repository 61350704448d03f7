"""What a parser makes of the model's text: content, reasoning, and tool calls in pieces.

A call streams as CallStart (its name known), CallArgs fragments (JSON text; joined, they are the JSON object of
its arguments) and CallEnd. `index` counts the calls of one reply from 0. A call that gets no CallEnd was
abandoned (its text turned out not to be a call after all): its raw text follows as Text, and its index is not
reused, since its first pieces may already have been sent to a client.
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


Event = Text | Reasoning | CallStart | CallArgs | CallEnd


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
