"""OpenAI's Responses API (`POST /v1/responses`): requests read into the ChatRequest the chat endpoint makes
(templates, tools, grammars and parsers are shared), replies written as output items (reasoning, message,
function_call), whole or as the typed stream events (`response.created` ... `response.completed`), each with its
`sequence_number`.

Mapping (`chat_template_kwargs` is read as on the chat endpoint): `instructions` is a system message; `input` is a
string (one user message) or items: role messages (`input_text` / `output_text` parts), `function_call` items (an
assistant's calls) and `function_call_output` items (tool results); reasoning items in the input are dropped, as the
template renders only the last turn's reasoning anyway. Tools are the flat `{type: function, name, parameters}`
form; `text.format` is `response_format`. Nothing is stored: `store` is accepted (clients send it) but a response
cannot be fetched again, so `previous_response_id` is refused with that reason."""

from __future__ import annotations

import copy
import json
import uuid

from ..engine import SamplingParams, TokenOut, Tokenizer
from ..errors import ConfigError
from .chat_output import Call
from .fields import (APIError, as_bool, as_int, as_list, as_number, as_object, as_str, body_object, bounded,
                     ensure, read, required)
from .protocol import (SERVER_SAMPLING, ChatRequest, GenerationOptions, ResponseFormat, response_format_of,
                       template_kwargs)
from .responses import Reply, sse
from .tool_protocol import ToolRequest, parse_tools
from .toolformats import CallAbandoned, CallArgs, CallEnd, CallStart, Event, Reasoning, Text


# --- requests --------------------------------------------------------------------------------------------------------

def parse_response_request(body: object, defaults: SamplingParams = SERVER_SAMPLING) -> ChatRequest:
    """`defaults`: the server's sampling for what the request leaves out."""
    body = body_object(body)
    model = required(body, "model", as_str)
    ensure(body.get("previous_response_id") is None, "previous_response_id", "previous_response_id is not "
           "supported: this server stores no responses; send the whole conversation as 'input'.",
           "unsupported_parameter")
    messages = _instructions(body) + _input(required(body, "input"))
    stream = read(body, "stream", as_bool, False)
    options = GenerationOptions(
        max_tokens=bounded(body, "max_output_tokens", as_int, None, lambda n: n >= 1, "a value >= 1"), stop=(),
        sampling=_sampling(body, defaults), logprobs=False, top_logprobs=0, stream=stream, include_usage=False,
        user=read(body, "user", as_str), response_format=_text_format(body))
    kwargs = template_kwargs({"chat_template_kwargs": body.get("chat_template_kwargs"),
                              "reasoning_effort": (read(body, "reasoning", as_object) or {}).get("effort")})
    return ChatRequest(model, tuple(messages), options, _tools(body), kwargs)


def _sampling(body: dict, d: SamplingParams) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=float(bounded(body, "temperature", as_number, d.temperature, lambda t: 0 <= t <= 2,
                                      "a value in [0, 2]")),
            top_p=float(bounded(body, "top_p", as_number, d.top_p, lambda p: 0 < p <= 1, "a value in (0, 1]")),
            top_k=d.top_k, min_p=d.min_p, repeat_penalty=d.repeat_penalty, repeat_last_n=d.repeat_last_n,
            seed=read(body, "seed", as_int))
    except ConfigError as error:
        raise APIError(400, str(error)) from error


def _instructions(body: dict) -> list[dict]:
    text = read(body, "instructions", as_str)
    return [{"role": "system", "content": text}] if text else []


def _input(value: object) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": as_str(value, "input")}]
    items = as_list(value, "input")
    ensure(items, "input", "Invalid 'input': expected at least one item.")
    out: list[dict] = []
    calls: dict[str, str] = {}
    for i, item in enumerate(items):
        _item(item, f"input[{i}]", out, calls)
    return out


def _item(item: object, label: str, out: list[dict], calls: dict[str, str]) -> None:
    as_object(item, label)
    kind = read(item, "type", as_str, "message", within=label)
    if kind == "message":
        role = required(item, "role", as_str, within=label)
        roles = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
        ensure(role in roles, label, f"Invalid '{label}.role': {role!r} is not one of 'user', 'system', "
               "'developer', 'assistant'.", "invalid_value")
        out.append({"role": roles[role], "content": _content(required(item, "content", within=label), label)})
    elif kind == "function_call":
        call_id = required(item, "call_id", as_str, within=label)
        name = required(item, "name", as_str, within=label)
        arguments = _arguments(required(item, "arguments", as_str, within=label), label)
        calls[call_id] = name
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
            out[-1]["tool_calls"].append(call)  # parallel calls are consecutive items of one turn
        else:
            out.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id = required(item, "call_id", as_str, within=label)
        ensure(call_id in calls, label, f"Invalid '{label}': no earlier function_call item has the call_id "
               f"{call_id!r}.", "invalid_value")
        output = item.get("output")
        text = output if isinstance(output, str) else _content(output, label)
        out.append({"role": "tool", "tool_call_id": call_id, "name": calls[call_id], "content": text})
    elif kind != "reasoning":
        raise APIError(400, f"Invalid '{label}.type': {kind!r} input items are not supported (message, "
                       "function_call, function_call_output and reasoning are).", param="input",
                       code="unsupported_value")


def _content(content: object, label: str) -> str:
    if isinstance(content, str):
        return as_str(content, f"{label}.content")
    parts = []
    for j, part in enumerate(as_list(content, f"{label}.content")):
        where = f"{label}.content[{j}]"
        as_object(part, where)
        kind = required(part, "type", as_str, within=where)
        ensure(kind in ("input_text", "output_text", "text"), where, f"Invalid '{where}.type': only text parts "
               f"are supported, got {kind!r}.", "unsupported_value")
        parts.append(required(part, "text", as_str, within=where))
    return "\n".join(parts)


def _arguments(text: str, label: str) -> dict:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise APIError(400, f"Invalid '{label}.arguments': not JSON ({exc}).", param="input",
                       code="invalid_value") from None


def _tools(body: dict) -> ToolRequest | None:
    """The flat tool form ({type, name, parameters}) and tool_choice {type: function, name} as the chat form."""
    nested = []
    for i, tool in enumerate(read(body, "tools", as_list, [])):
        label = f"tools[{i}]"
        as_object(tool, label)
        kind = required(tool, "type", as_str, within=label)
        ensure(kind == "function", label, f"Invalid '{label}.type': only 'function' tools are supported, got "
               f"{kind!r}.", "unsupported_value")
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        nested.append({"type": "function", "function": fn})
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function" and "function" not in choice:
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return parse_tools({"tools": nested, "tool_choice": choice, "parallel_tool_calls": body.get("parallel_tool_calls")})


def _text_format(body: dict) -> ResponseFormat | None:
    text = read(body, "text", as_object)
    if text is None or text.get("format") is None:
        return None
    fmt = as_object(text["format"], "text.format")
    if fmt.get("type") == "json_schema":  # the flat form: name and schema beside type
        fmt = {"type": "json_schema", "json_schema": {k: fmt.get(k) for k in ("name", "schema", "strict")}}
    return response_format_of(fmt, "text")


# --- replies ---------------------------------------------------------------------------------------------------------

class ResponsesRender:
    """A reply as a Response object, or as its stream of typed events."""

    def __init__(self, reply: Reply, prep, tok: Tokenizer):
        self.reply, self.parsed = reply, prep.parsed
        reply.id = "resp_" + uuid.uuid4().hex[:24]
        self._seq = 0
        self._items: list[dict] = []  # output items in order, as streamed
        self._open: dict | None = None  # the item being streamed
        self._call_items: dict[int, dict] = {}  # call index -> its function_call item

    def whole(self) -> dict:
        parts, output = self.reply.parts, []
        if parts.reasoning:
            output.append(_reasoning_item("".join(parts.reasoning)))
        text = "".join(parts.content)
        if text or not parts.reported_calls:
            output.append(_message_item(text, self._status()))
        output += [_call_item(call, "incomplete" if call.abandoned else "completed") for call in parts.reported_calls]
        return self._response(output, self._status())

    def start(self) -> list[bytes]:
        head = self._response([], "in_progress")
        return [self._event("response.created", response=head), self._event("response.in_progress", response=head)]

    def events(self, parsed: list[Event], token_events: list[TokenOut]) -> list[bytes]:
        frames = []
        for ev in parsed:
            if isinstance(ev, Text) and ev.text:
                frames += self._text("message", ev.text)
            elif isinstance(ev, Reasoning) and ev.text:
                frames += self._text("reasoning", ev.text)
            elif isinstance(ev, CallStart):
                frames += self._close()
                call = self.reply.parts.calls[ev.index]
                item = _call_item(call, "in_progress")
                self._call_items[ev.index] = item
                frames += self._add(item)
            elif isinstance(ev, CallArgs):
                item = self._call_items[ev.index]
                item["arguments"] += ev.fragment
                frames.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                          output_index=self._index(item), delta=ev.fragment))
            elif isinstance(ev, CallEnd):
                frames += self._close()
            elif isinstance(ev, CallAbandoned):
                frames += self._close("incomplete")
        return frames

    def end(self) -> list[bytes]:
        frames = self._close()
        status = self._status()
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return frames + [self._event(kind, response=self._response(self._items, status))]

    def error(self, err: APIError) -> list[bytes]:
        return [self._event("error", code=err.code or err.type, message=err.message, param=err.param)]

    # --- helpers -----------------------------------------------------------------------------------------------

    def _status(self) -> str:
        return "incomplete" if self.reply.finish_reason == "length" else "completed"

    def _response(self, output: list[dict], status: str) -> dict:
        r, opt, tools = self.reply, self.parsed.options, self.parsed.tools
        return {"id": r.id, "object": "response", "created_at": r.created, "status": status, "model": r.model,
                "output": output, "error": None, "metadata": {},
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "instructions": next((m["content"] for m in self.parsed.messages if m["role"] == "system"), None),
                "tools": [{"type": "function", **t["function"]} for t in (tools.tools if tools else ())],
                "tool_choice": _choice(tools), "parallel_tool_calls": tools.parallel if tools else True,
                "temperature": opt.sampling.temperature, "top_p": opt.sampling.top_p,
                "max_output_tokens": opt.max_tokens, "store": False,
                "usage": {"input_tokens": r.prompt_tokens, "output_tokens": r.completion_tokens,
                          "total_tokens": r.prompt_tokens + r.completion_tokens,
                          "input_tokens_details": {"cached_tokens": r.cached_tokens},
                          "output_tokens_details": {"reasoning_tokens": 0}}}

    def _event(self, kind: str, **fields) -> bytes:
        self._seq += 1
        return sse({"type": kind, "sequence_number": self._seq - 1, **fields}, kind)

    def _index(self, item: dict) -> int:
        return next(i for i, it in enumerate(self._items) if it is item)

    def _add(self, item: dict) -> list[bytes]:
        self._items.append(item)
        self._open = item
        return [self._event("response.output_item.added", output_index=len(self._items) - 1, item=_copy(item))]

    def _text(self, kind: str, text: str) -> list[bytes]:
        frames = []
        if self._open is None or self._open["type"] != kind:
            frames += self._close()
            item = _reasoning_item("") if kind == "reasoning" else _message_item("", "in_progress")
            frames += self._add(item)
            if kind == "message":
                frames.append(self._event("response.content_part.added", item_id=item["id"],
                                          output_index=self._index(item), content_index=0,
                                          part={"type": "output_text", "text": "", "annotations": []}))
        item = self._open
        item["content"][0]["text"] += text
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        return frames + [self._event(name, item_id=item["id"], output_index=self._index(item), content_index=0,
                                     delta=text, **extra)]

    def _close(self, status: str = "completed") -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        index, frames = self._index(item), []
        if item["type"] == "message":
            part = item["content"][0]
            frames += [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=part["text"], logprobs=[]),
                       self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part)]
        elif item["type"] == "reasoning":
            frames.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                      content_index=0, text=item["content"][0]["text"]))
        else:
            frames.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=index, arguments=item["arguments"]))
        item["status"] = status
        return frames + [self._event("response.output_item.done", output_index=index, item=_copy(item))]


def _copy(item: dict) -> dict:
    return copy.deepcopy(item)


def _choice(tools: ToolRequest | None):
    if tools is None or tools.choice in ("auto", "none", "required"):
        return tools.choice if tools else "auto"
    return {"type": "function", "name": tools.name}


def _reasoning_item(text: str) -> dict:
    return {"type": "reasoning", "id": "rs_" + uuid.uuid4().hex[:24], "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": "in_progress"}


def _message_item(text: str, status: str) -> dict:
    return {"type": "message", "id": "msg_" + uuid.uuid4().hex[:24], "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(call: Call, status: str) -> dict:
    return {"type": "function_call", "id": "fc_" + call.id.removeprefix("call_"), "call_id": call.id,
            "name": call.name, "arguments": "".join(call.arguments), "status": status}

