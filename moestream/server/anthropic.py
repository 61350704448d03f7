"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`): requests read into the same
ChatRequest the OpenAI endpoint makes (so templates, tools, grammars and parsers are shared), replies written as
Anthropic's content blocks, whole or as its named stream events.

Mapping: `system` (text or text blocks) is a system message; `tool_use` blocks of an assistant turn are its tool
calls, `tool_result` blocks of a user turn are `tool` messages; `thinking` blocks are the turn's reasoning.
`tool_choice` auto/any/tool/none is OpenAI's auto/required/named/none, `disable_parallel_tool_use` its
`parallel_tool_calls: false`; `thinking: {type: disabled}` sets the template's `enable_thinking: false`.
Sampling: what the request sets (temperature in 0..1, top_p, top_k), the server's defaults for the rest. Errors are
`{"type": "error", "error": {"type", "message"}}` with Anthropic's status codes (app.py converts them)."""

from __future__ import annotations

import json
import uuid

from ..engine import SamplingParams, TokenOut, Tokenizer
from ..errors import ConfigError
from .chat_output import new_call_id
from .fields import (APIError, as_bool, as_int, as_list, as_number, as_object, as_str, body_object, bounded,
                     ensure, read, required)
from .protocol import SERVER_SAMPLING, ChatRequest, GenerationOptions
from .responses import Reply, sse
from .tool_protocol import ToolRequest
from .toolformats import CallAbandoned, CallArgs, CallEnd, CallStart, Event, Reasoning, Text

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 529: "overloaded_error"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def error_body(err: APIError) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(err.status, "api_error"), "message": err.message}}


# --- requests --------------------------------------------------------------------------------------------------------

def parse_messages(body: object, defaults: SamplingParams = SERVER_SAMPLING, counting: bool = False) -> ChatRequest:
    """A Messages request as the ChatRequest the engine side runs; `defaults`: the server's sampling for what the
    request leaves out. `counting`: count_tokens, where `max_tokens` is not asked for."""
    body = body_object(body)
    model = required(body, "model", as_str)
    max_tokens = None if counting else bounded(body, "max_tokens", as_int, None, lambda n: n >= 1, "a value >= 1")
    if not counting:
        required(body, "max_tokens")
    messages = _system(body) + _turns(body)
    stops = tuple(as_str(s, f"stop_sequences[{i}]") for i, s in enumerate(read(body, "stop_sequences", as_list, [])))
    ensure(all(stops), "stop_sequences", "stop_sequences must not hold empty strings.")
    stream = read(body, "stream", as_bool, False)
    options = GenerationOptions(max_tokens=max_tokens, stop=stops, sampling=_sampling(body, defaults), logprobs=False,
                                top_logprobs=0, stream=stream, include_usage=False, user=None)
    kwargs = {}
    thinking = read(body, "thinking", as_object)
    if thinking is not None:
        kind = required(thinking, "type", as_str, within="thinking")
        ensure(kind in ("enabled", "disabled", "adaptive"), "thinking", f"thinking.type: {kind!r} is not one of "
               "'enabled', 'disabled', 'adaptive'.")
        kwargs["enable_thinking"] = kind != "disabled"
    return ChatRequest(model, tuple(messages), options, _tools(body), kwargs)


def _sampling(body: dict, d: SamplingParams) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=float(bounded(body, "temperature", as_number, d.temperature, lambda t: 0 <= t <= 1,
                                      "a value in [0, 1]")),
            top_p=float(bounded(body, "top_p", as_number, d.top_p, lambda p: 0 < p <= 1, "a value in (0, 1]")),
            top_k=bounded(body, "top_k", as_int, d.top_k, lambda k: k >= 0, "a value >= 0"), min_p=d.min_p,
            repeat_penalty=d.repeat_penalty, repeat_last_n=d.repeat_last_n, seed=None)
    except ConfigError as error:
        raise APIError(400, str(error)) from error


def _system(body: dict) -> list[dict]:
    system = body.get("system")
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": as_str(system, "system")}]
    blocks = as_list(system, "system")
    return [{"role": "system", "content": "\n".join(_text_block(b, f"system[{i}]") for i, b in enumerate(blocks))}]


def _text_block(block: object, label: str) -> str:
    as_object(block, label)
    kind = required(block, "type", as_str, within=label)
    ensure(kind == "text", label, f"{label}.type: only 'text' blocks are allowed here, got {kind!r}.")
    return required(block, "text", as_str, within=label)


def _turns(body: dict) -> list[dict]:
    turns = required(body, "messages", as_list)
    ensure(turns, "messages", "messages: at least one message is required.")
    out, calls = [], {}
    for i, turn in enumerate(turns):
        label = f"messages[{i}]"
        as_object(turn, label)
        role = required(turn, "role", as_str, within=label)
        ensure(role in ("user", "assistant"), label, f"{label}.role: {role!r} is not one of 'user', 'assistant'.")
        content = required(turn, "content", within=label)
        blocks = [{"type": "text", "text": as_str(content, f"{label}.content")}] if isinstance(content, str) \
            else as_list(content, f"{label}.content")
        out += _assistant(blocks, label, calls) if role == "assistant" else _user(blocks, label, calls)
    return out


def _assistant(blocks: list, label: str, calls: dict[str, str]) -> list[dict]:
    text, reasoning, tool_calls = [], [], []
    for j, block in enumerate(blocks):
        where = f"{label}.content[{j}]"
        kind = _kind(block, where)
        if kind == "text":
            text.append(required(block, "text", as_str, within=where))
        elif kind == "thinking":
            reasoning.append(read(block, "thinking", as_str, "", within=where))
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            call_id = required(block, "id", as_str, within=where)
            name = required(block, "name", as_str, within=where)
            arguments = required(block, "input", as_object, within=where)
            calls[call_id] = name
            tool_calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        else:
            _unsupported(kind, where)
    message = {"role": "assistant", "content": "".join(text)}
    message.update({"tool_calls": tool_calls} if tool_calls else {})
    message.update({"reasoning_content": "".join(reasoning)} if reasoning else {})
    return [message]


def _user(blocks: list, label: str, calls: dict[str, str]) -> list[dict]:
    out, text = [], []
    for j, block in enumerate(blocks):
        where = f"{label}.content[{j}]"
        kind = _kind(block, where)
        if kind == "text":
            text.append(required(block, "text", as_str, within=where))
        elif kind == "tool_result":
            call_id = required(block, "tool_use_id", as_str, within=where)
            ensure(call_id in calls, where, f"{where}: tool_result for {call_id!r}, which no earlier tool_use block "
                   "has as its id.")
            out.append({"role": "tool", "tool_call_id": call_id, "name": calls[call_id],
                        "content": _result_text(block.get("content"), where)})
        else:
            _unsupported(kind, where)
    return out + ([{"role": "user", "content": "\n".join(text)}] if text else [])


def _kind(block: object, where: str) -> str:
    as_object(block, where)
    return required(block, "type", as_str, within=where)


def _unsupported(kind: str, where: str) -> None:
    raise APIError(400, f"{where}.type: {kind!r} content blocks are not supported by this server (text, "
                   "tool_use, tool_result and thinking are).", param="messages")


def _result_text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return as_str(content, f"{where}.content")
    blocks = as_list(content, f"{where}.content")
    return "\n".join(_text_block(b, f"{where}.content[{k}]") for k, b in enumerate(blocks))


def _tools(body: dict) -> ToolRequest | None:
    tools = []
    for i, tool in enumerate(read(body, "tools", as_list, [])):
        label = f"tools[{i}]"
        as_object(tool, label)
        kind = read(tool, "type", as_str, "custom", within=label)
        ensure(kind == "custom", label, f"{label}.type: server tools ({kind!r}) are not supported; give custom "
               "tools with an input_schema.")
        name = required(tool, "name", as_str, within=label)
        fn = {"name": name, "parameters": required(tool, "input_schema", as_object, within=label)}
        description = read(tool, "description", as_str, within=label)
        fn.update({"description": description} if description else {})
        tools.append({"type": "function", "function": fn})
    names = [t["function"]["name"] for t in tools]
    ensure(len(set(names)) == len(names), "tools", "tools: two tools have the same name.")
    choice, name, parallel = _tool_choice(read(body, "tool_choice", as_object), names)
    if not tools:
        ensure(choice in ("auto", "none"), "tool_choice", "tool_choice asks for a tool, but no tools are given.")
        return None
    return ToolRequest(tuple(tools), choice, name, parallel)


def _tool_choice(choice: dict | None, names: list[str]) -> tuple[str, str | None, bool]:
    if choice is None:
        return "auto", None, True
    kind = required(choice, "type", as_str, within="tool_choice")
    parallel = not read(choice, "disable_parallel_tool_use", as_bool, False, within="tool_choice")
    mapping = {"auto": "auto", "any": "required", "none": "none", "tool": "named"}
    ensure(kind in mapping, "tool_choice", f"tool_choice.type: {kind!r} is not one of 'auto', 'any', 'tool', "
           "'none'.")
    name = None
    if kind == "tool":
        name = required(choice, "name", as_str, within="tool_choice")
        ensure(name in names, "tool_choice", f"tool_choice names the tool {name!r}, which is not among the tools.")
    return mapping[kind], name, parallel


# --- replies ---------------------------------------------------------------------------------------------------------

class AnthropicRender:
    """A reply as a Messages response, or as its stream of named events."""

    def __init__(self, reply: Reply, prep, tok: Tokenizer):
        self.reply, self.stops = reply, prep.parsed.options.stop
        reply.id = "msg_" + uuid.uuid4().hex[:24]
        self._open: tuple[str, int | None] | None = None  # the content block being streamed: (kind, call index)
        self._blocks = 0

    def whole(self) -> dict:
        parts, content = self.reply.parts, []
        if parts.reasoning:
            content.append({"type": "thinking", "thinking": "".join(parts.reasoning), "signature": ""})
        text = "".join(parts.content)
        if text or not parts.reported_calls:
            content.append({"type": "text", "text": text})
        for call in parts.reported_calls:
            content.append({"type": "tool_use", "id": _tool_id(call.id), "name": call.name,
                            "input": _input(call.arguments)})
        return {**self._message(), "content": content, **self._stop()}

    def start(self) -> list[bytes]:
        head = {**self._message(), "content": [], "stop_reason": None, "stop_sequence": None}
        head["usage"]["output_tokens"] = 0
        return [sse({"type": "message_start", "message": head}, "message_start")]

    def events(self, parsed: list[Event], token_events: list[TokenOut]) -> list[bytes]:
        frames = []
        for ev in parsed:
            if isinstance(ev, Text) and ev.text:
                frames += self._delta("text", None, {"type": "text_delta", "text": ev.text})
            elif isinstance(ev, Reasoning) and ev.text:
                frames += self._delta("thinking", None, {"type": "thinking_delta", "thinking": ev.text})
            elif isinstance(ev, CallStart):
                frames += self._begin("tool_use", ev.index, {"type": "tool_use", "name": ev.name, "input": {},
                                                             "id": _tool_id(self.reply.parts.calls[ev.index].id)})
            elif isinstance(ev, CallArgs):
                frames += self._delta("tool_use", ev.index, {"type": "input_json_delta", "partial_json": ev.fragment})
            elif isinstance(ev, (CallEnd, CallAbandoned)):
                frames += self._close()
        return frames

    def end(self) -> list[bytes]:
        frames = self._close()
        usage = {"output_tokens": self.reply.completion_tokens}
        delta = {"type": "message_delta", "delta": self._stop(), "usage": usage}
        return frames + [sse(delta, "message_delta"), sse({"type": "message_stop"}, "message_stop")]

    def error(self, err: APIError) -> list[bytes]:
        return [sse(error_body(err), "error")]

    # --- helpers -----------------------------------------------------------------------------------------------

    def _message(self) -> dict:
        r = self.reply
        return {"id": r.id, "type": "message", "role": "assistant", "model": r.model,
                "usage": {"input_tokens": r.prompt_tokens - r.cached_tokens, "output_tokens": r.completion_tokens,
                          "cache_read_input_tokens": r.cached_tokens, "cache_creation_input_tokens": 0}}

    def _stop(self) -> dict:
        reason = self.reply.final_reason
        stop_sequence = None
        if reason == "stop" and self.reply.stopped_by:
            reason, stop_sequence = "stop_sequence", self.reply.stopped_by
        return {"stop_reason": STOP_REASONS.get(reason, reason), "stop_sequence": stop_sequence}

    def _delta(self, kind: str, index: int | None, delta: dict) -> list[bytes]:
        frames = [] if self._open == (kind, index) else self._begin(kind, index, _empty_block(kind))
        return frames + [sse({"type": "content_block_delta", "index": self._blocks - 1, "delta": delta},
                             "content_block_delta")]

    def _begin(self, kind: str, index: int | None, block: dict) -> list[bytes]:
        frames = self._close()
        self._open = (kind, index)
        self._blocks += 1
        return frames + [sse({"type": "content_block_start", "index": self._blocks - 1, "content_block": block},
                             "content_block_start")]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse({"type": "content_block_stop", "index": self._blocks - 1}, "content_block_stop")]


def _empty_block(kind: str) -> dict:
    return {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {"type": "text", "text": ""}


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def _input(fragments: list[str]) -> dict:
    try:
        value = json.loads("".join(fragments) or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {"value": value}
