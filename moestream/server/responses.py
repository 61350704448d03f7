"""OpenAI response bodies: chat and text completions, whole or as stream chunks, with usage and logprobs."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ..engine import TokenOut, Tokenizer


@dataclass
class Reply:
    """What one request produced so far."""

    kind: str  # "chat" | "text"
    model: str
    prompt_tokens: int
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenOut] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = self.id or ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex

    @property
    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def _head(self, chunk: bool) -> dict:
        obj = {"chat": "chat.completion", "text": "text_completion"}[self.kind] + (".chunk" if chunk and self.kind == "chat" else "")
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}


def whole(reply: Reply, tok: Tokenizer, with_logprobs: bool, text_offset: int = 0) -> dict:
    lp = logprobs_body(reply.kind, reply.logprobs, tok, text_offset) if with_logprobs else None
    if reply.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": reply.text, "refusal": None},
                  "logprobs": lp, "finish_reason": reply.finish_reason}
    else:
        choice = {"index": 0, "text": reply.text, "logprobs": lp, "finish_reason": reply.finish_reason}
    return {**reply._head(False), "choices": [choice], "usage": reply.usage}


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
