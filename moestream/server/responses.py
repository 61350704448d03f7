"""OpenAI response bodies: chat and text completions, whole or as stream chunks, with usage and logprobs."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from ..engine import TokenOut, Tokenizer
from .chat_output import ChatParts
from .toolformats import CallAbandoned, CallEnd, CallStart, Event, Reasoning, Text


@dataclass
class Reply:
    """What one request produced so far."""

    kind: str  # "chat" | "text"
    model: str
    prompt_tokens: int
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    parts: ChatParts = field(default_factory=ChatParts)  # content, reasoning and tool calls so far
    completion_tokens: int = 0
    finish_reason: str | None = None  # the engine's (or 'stop' for a stop string)
    stopped_by: str | None = None  # the stop string that ended it
    cached_tokens: int = 0  # prompt tokens whose KV rows the prompt cache gave
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    logprobs: list[TokenOut] = field(default_factory=list)

    def log_line(self, endpoint: str) -> str:
        """One line for the request log: id, endpoint, tokens, time to first token, decode speed, finish reason."""
        now = time.perf_counter()
        parts = [self.id, endpoint, f"prompt {self.prompt_tokens} (cached {self.cached_tokens})",
                 f"generated {self.completion_tokens}"]
        if self.first_token_at is not None:
            parts.append(f"first token {(self.first_token_at - self.started) * 1e3:.0f} ms")
            if self.completion_tokens > 1 and now > self.first_token_at:
                parts.append(f"{(self.completion_tokens - 1) / (now - self.first_token_at):.1f} tok/s")
        parts.append(self.final_reason or "unfinished")
        return " · ".join(parts)

    @property
    def text(self) -> str:
        return "".join(self.parts.content)

    @property
    def final_reason(self) -> str | None:
        """What the client is told: 'tool_calls' when the reply ended after making calls."""
        if self.finish_reason == "stop" and self.parts.reported_calls:
            return "tool_calls"
        return self.finish_reason

    def __post_init__(self) -> None:
        self.id = self.id or ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex

    @property
    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}

    def _head(self, chunk: bool) -> dict:
        obj = {"chat": "chat.completion", "text": "text_completion"}[self.kind] + (".chunk" if chunk and self.kind == "chat" else "")
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}


def whole(reply: Reply, tok: Tokenizer, with_logprobs: bool, text_offset: int = 0) -> dict:
    lp = logprobs_body(reply.kind, reply.logprobs, tok, text_offset) if with_logprobs else None
    if reply.kind == "chat":
        choice = {"index": 0, "message": _message(reply.parts), "logprobs": lp, "finish_reason": reply.final_reason}
    else:
        choice = {"index": 0, "text": reply.text, "logprobs": lp, "finish_reason": reply.finish_reason}
    return {**reply._head(False), "choices": [choice], "usage": reply.usage}


def _message(parts: ChatParts) -> dict:
    calls = parts.reported_calls
    content = "".join(parts.content)
    message = {"role": "assistant", "content": None if calls and not content.strip() else content, "refusal": None}
    if parts.reasoning:
        message["reasoning_content"] = "".join(parts.reasoning)
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": "".join(c.arguments)}} for c in calls]
    return message


def event_chunks(reply: Reply, events: list[Event], tok: Tokenizer, token_events: list[TokenOut] | None) -> list[dict]:
    """Stream chunks for one engine event's output: a delta per content, reasoning or call event (a call's first
    delta carries its id and name, the next ones argument fragments); logprobs ride on the first chunk, or on an
    empty one when the token added no text yet."""
    chunks = [_event_chunk(reply, ev, tok) for ev in events if not isinstance(ev, (CallEnd, CallAbandoned))]
    chunks = [c for c in chunks if c is not None]
    if token_events:
        if not chunks:
            chunks = [chunk(reply, "" if reply.kind == "text" else None, tok)]
        chunks[0]["choices"][0]["logprobs"] = logprobs_body(reply.kind, token_events, tok)
    return chunks


def _event_chunk(reply: Reply, ev: Event, tok: Tokenizer) -> dict | None:
    if isinstance(ev, Text):
        return chunk(reply, ev.text, tok) if ev.text else None
    if reply.kind != "chat":
        return None
    if isinstance(ev, Reasoning):
        delta = {"reasoning_content": ev.text}
    elif isinstance(ev, CallStart):
        call = reply.parts.calls[ev.index]
        delta = {"tool_calls": [{"index": ev.index, "id": call.id, "type": "function",
                                 "function": {"name": ev.name, "arguments": ""}}]}
    else:
        delta = {"tool_calls": [{"index": ev.index, "function": {"arguments": ev.fragment}}]}
    return {**reply._head(True), "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}


def chunk(reply: Reply, text: str | None, tok: Tokenizer, events: list[TokenOut] | None = None,
          finish_reason: str | None = None, first: bool = False) -> dict:
    """One stream chunk: a text delta (chat: the role too on the first), or the final finish_reason."""
    lp = logprobs_body(reply.kind, events, tok) if events else None
    if reply.kind == "chat":
        delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text is not None else {})
        choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": lp, "finish_reason": finish_reason}
    return {**reply._head(True), "choices": [choice]}


def usage_chunk(reply: Reply) -> dict:
    return {**reply._head(True), "choices": [], "usage": reply.usage}


def logprobs_body(kind: str, events: list[TokenOut], tok: Tokenizer, text_offset: int = 0) -> dict:
    if kind == "chat":
        return {"content": [_chat_entry(ev, tok) for ev in events], "refusal": None}
    pieces = [_piece(tok, ev.token) for ev in events]
    offsets, pos = [], text_offset
    for p in pieces:
        offsets.append(pos)
        pos += len(p)
    return {"tokens": pieces, "token_logprobs": [ev.logprob for ev in events],
            "top_logprobs": [{_piece(tok, t): lp for t, lp in ev.top or []} for ev in events],
            "text_offset": offsets}


def _chat_entry(ev: TokenOut, tok: Tokenizer) -> dict:
    entry = _token_logprob(tok, ev.token, ev.logprob)
    entry["top_logprobs"] = [_token_logprob(tok, t, lp) for t, lp in ev.top or []]
    return entry


def _token_logprob(tok: Tokenizer, token: int, logprob: float) -> dict:
    raw = tok.token_bytes(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def _piece(tok: Tokenizer, token: int) -> str:
    return tok.token_bytes(token).decode("utf-8", errors="replace")


class OpenAIRender:
    """A reply in OpenAI's chat or text-completions shape: the whole body, or the stream's `data:` frames."""

    def __init__(self, reply: Reply, prep, tok: Tokenizer):
        """prep: the app's Prepared request (its options and, for text completions with echo, the prompt text)."""
        self.reply, self.tok, self.echo, self.opt = reply, tok, prep.echo, prep.parsed.options
        reply.parts.content.append(self.echo)

    def whole(self) -> dict:
        return whole(self.reply, self.tok, self.opt.logprobs, len(self.echo))

    def start(self) -> list[bytes]:
        if self.reply.kind == "chat" or self.echo:
            return [sse(chunk(self.reply, self.echo, self.tok, first=True))]
        return []

    def events(self, parsed: list[Event], token_events: list[TokenOut]) -> list[bytes]:
        lp = token_events if self.opt.logprobs else None
        return [sse(c) for c in event_chunks(self.reply, parsed, self.tok, lp)]

    def end(self) -> list[bytes]:
        frames = [sse(chunk(self.reply, None, self.tok, finish_reason=self.reply.final_reason))]
        if self.opt.include_usage:
            frames.append(sse(usage_chunk(self.reply)))
        return frames + [b"data: [DONE]\n\n"]

    def error(self, err) -> list[bytes]:
        return [sse(err.body()), b"data: [DONE]\n\n"]


def sse(obj: dict, event: str | None = None) -> bytes:
    """One server-sent event: `data:` JSON, after an `event:` line when the API names its events."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"
