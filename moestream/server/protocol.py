"""OpenAI-compatible request bodies: parsing, validation, and errors shaped like OpenAI's.

No HTTP here: the app decodes the JSON and hands the value to `parse_chat` / `parse_completion`, and answers any
`APIError` with `status` and `body()`. Status rules: the body is not an object -> 400; a required field is missing or
a known field has the wrong JSON type -> 422; the right type with a bad value, or a feature this server lacks -> 400.
In a field's error `param` is the top-level field, and the message names the exact place (e.g. 'messages[1].role').
Unknown fields are ignored, as clients send many optional ones; null counts as absent, as in OpenAI's API.
Every string read passes one check, `_as_str`: JSON's '\\ud800' escape decodes to a lone surrogate, which is no
Unicode text (it cannot be encoded as UTF-8), so it is a 400 naming the field, not a crash in the tokenizer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine import SamplingParams
from ..errors import ConfigError
from .fields import APIError
from .fields import as_bool as _as_bool
from .fields import as_int as _as_int
from .fields import as_number as _as_number
from .fields import as_object as _as_object
from .fields import as_str as _as_str
from .fields import body_object as _object
from .fields import bounded as _bounded
from .fields import ensure as _check
from .fields import json_type as _json_type
from .fields import of_type as _of_type
from .fields import read as _read
from .fields import required as _required
from .fields import type_error as _type_error
from .tool_protocol import ToolRequest, assistant_calls, parse_tools, tool_result


def unauthorized() -> APIError:
    return APIError(401, "Incorrect or missing API key. Send the server's key as 'Authorization: Bearer <key>' (or "
                    "as 'x-api-key: <key>' to /v1/messages).",
                    type="authentication_error", code="invalid_api_key")


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model '{name}' does not exist on this server; GET /v1/models lists the served ones.",
                    param="model", code="model_not_found")


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than this server's limit of {limit} bytes.")


def overloaded() -> APIError:
    return APIError(429, "The server is at capacity; retry later.", type="rate_limit_error")


def unavailable(reason: str) -> APIError:
    return APIError(503, f"The server is unavailable: {reason}.", type="server_error")


def malformed_json(detail: str) -> APIError:
    return APIError(400, f"We could not parse the JSON body of your request ({detail}).")


def too_deep() -> APIError:
    return APIError(400, "We could not parse the JSON body of your request: it nests arrays or objects too deeply.")


# A request's sampling where it says nothing: the CLI's (moestream generate's) defaults, unless serve's --temp,
# --top-k, --top-p, --min-p, --repeat-penalty set others
SERVER_SAMPLING = SamplingParams()


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int | None  # None = until the context ends
    stop: tuple[str, ...]  # 0..4 non-empty strings
    sampling: SamplingParams
    logprobs: bool
    top_logprobs: int  # alternatives per token besides the chosen one (0..20)
    stream: bool
    include_usage: bool  # streaming only: a last chunk carrying token counts
    user: str | None
    response_format: ResponseFormat | None = None  # None: free text


@dataclass(frozen=True)
class ResponseFormat:
    """`response_format`: 'json_object' (any JSON object) or 'json_schema' (valid under `schema`)."""

    kind: str
    schema: Any = None
    name: str | None = None
    strict: bool = False


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[dict, ...]  # {"role": "system" | "user" | "assistant" | "tool", "content": str, ...}
    options: GenerationOptions
    tools: ToolRequest | None = None
    template_kwargs: dict = field(default_factory=dict)  # extra chat-template variables (enable_thinking, ...)


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: str | tuple[int, ...]  # text, or token ids
    echo: bool  # the returned text starts with the prompt
    options: GenerationOptions


def parse_chat(body: object, defaults: SamplingParams = SERVER_SAMPLING) -> ChatRequest:
    """`defaults`: the server's sampling settings for what the request leaves out (serve --temp, --top-k, ...)."""
    body = _object(body)
    model, messages = _required(body, "model", _as_str), _messages(body)
    _refuse_unsupported(body)
    max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"))
    return ChatRequest(model, messages, _options(body, max_tokens, _chat_logprobs(body), defaults),
                       parse_tools(body), template_kwargs(body))


def parse_completion(body: object, defaults: SamplingParams = SERVER_SAMPLING) -> CompletionRequest:
    body = _object(body)
    model, prompt = _required(body, "model", _as_str), _prompt(_required(body, "prompt"))
    _refuse_unsupported(body)
    _check(_read(body, "best_of", _as_int, 1) == 1, "best_of", "Only best_of=1 is supported.", "unsupported_value")
    _check(not _read(body, "suffix", _as_str), "suffix", "'suffix' (text after the completion, for insertion) "
           "is not supported by this server.", "unsupported_parameter")
    options = _options(body, _max_tokens(body, ("max_tokens",)), _completion_logprobs(body), defaults)
    return CompletionRequest(model, prompt, _read(body, "echo", _as_bool, False), options)


# --- fields shared by both endpoints ---------------------------------------------------------------------------------

def _refuse_unsupported(body: dict) -> None:
    # these change what the answer means, so ignoring them would silently answer a different request
    _check(_read(body, "n", _as_int, 1) == 1, "n", "Only n=1 is supported (one choice per request).",
           "unsupported_value")
    # the legacy form of tools (2023): clients that fill request templates may send an empty list
    _check(body.get("functions") in (None, []), "functions", "'functions' is not supported by this server; send "
           "'tools' instead.", "unsupported_parameter")


def _options(body: dict, max_tokens: int | None, logprobs: tuple[bool, int],
             defaults: SamplingParams) -> GenerationOptions:
    stream = _read(body, "stream", _as_bool, False)
    return GenerationOptions(max_tokens=max_tokens, stop=_stop(body), sampling=_sampling(body, defaults),
                             logprobs=logprobs[0], top_logprobs=logprobs[1], stream=stream, include_usage=_include_usage(body, stream),
                             user=_read(body, "user", _as_str), response_format=_response_format(body))


_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _response_format(body: dict) -> ResponseFormat | None:
    fmt = _read(body, "response_format", _as_object)
    return None if fmt is None else response_format_of(fmt)


def response_format_of(fmt: dict, label: str = "response_format") -> ResponseFormat | None:
    """`response_format` (or the Responses API's `text.format`, given the same shape) -> what it asks for."""
    kind = _required(fmt, "type", _as_str, within=label)
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    _check(kind == "json_schema", label, f"Invalid '{label}.type': {kind!r} is not one of "
           "'text', 'json_object', 'json_schema'.", "invalid_value")
    spec = _required(fmt, "json_schema", _as_object, within=label)
    name = _required(spec, "name", _as_str, within=f"{label}.json_schema")
    _check(_SCHEMA_NAME.fullmatch(name), label, f"Invalid '{label}.json_schema.name': expected "
           f"1 to 64 letters, digits, '_' or '-', but got {ascii(name[:80])}.", "invalid_value")
    schema = spec.get("schema")
    if schema is None:  # OpenAI's schema is optional: then any JSON object
        return ResponseFormat("json_object", name=name)
    _check(isinstance(schema, (dict, bool)), label, f"Invalid '{label}.json_schema.schema': "
           f"expected an object, but got {_json_type(schema)}.", "invalid_value")
    strict = _read(spec, "strict", _as_bool, False, within=f"{label}.json_schema")
    return ResponseFormat("json_schema", schema, name, strict)


def _max_tokens(body: dict, names: tuple[str, ...]) -> int | None:
    # chat's max_completion_tokens replaced max_tokens; both are checked, the first one given wins
    given = [_bounded(body, name, _as_int, None, lambda n: n >= 1, "a value >= 1") for name in names]
    return next((value for value in given if value is not None), None)


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list):
        raise _type_error("stop", "a string or an array of strings", value)
    stops = tuple(_as_str(stop, f"stop[{i}]") for i, stop in enumerate(stops))
    _check(len(stops) <= 4, "stop", f"Invalid 'stop': expected at most 4 sequences, but got {len(stops)}.")
    _check(all(stops), "stop", "Invalid 'stop': stop sequences must not be empty.")
    return stops


def _sampling(body: dict, d: SamplingParams) -> SamplingParams:
    """What the request sets, the server's defaults `d` for the rest. `top_k`, `min_p` and `repetition_penalty`
    are read too (vLLM's and llama.cpp's names; OpenAI has no such samplers)."""
    try:
        return SamplingParams(
            temperature=_number(body, "temperature", d.temperature, lambda t: 0 <= t <= 2, "a value in [0, 2]"),
            top_p=_number(body, "top_p", d.top_p, lambda p: 0 < p <= 1, "a value in (0, 1]"),
            top_k=_bounded(body, "top_k", _as_int, d.top_k, lambda k: k >= 0, "a value >= 0 (0 = off)"),
            min_p=_number(body, "min_p", d.min_p, lambda p: 0 <= p <= 1, "a value in [0, 1]"),
            repeat_penalty=_number(body, "repetition_penalty", d.repeat_penalty, lambda r: 0 < r <= 10,
                                   "a value in (0, 10]"),
            repeat_last_n=d.repeat_last_n,
            presence_penalty=_number(body, "presence_penalty", d.presence_penalty, lambda p: -2 <= p <= 2,
                                     "a value in [-2, 2]"),
            frequency_penalty=_number(body, "frequency_penalty", d.frequency_penalty, lambda p: -2 <= p <= 2,
                                      "a value in [-2, 2]"),
            seed=_seed(body), logit_bias=_logit_bias(body))
    except ConfigError as error:
        raise APIError(400, str(error)) from error


def _number(body: dict, name: str, default: float, within: Callable, rule: str) -> float:
    return float(_bounded(body, name, _as_number, default, within, rule))


def _seed(body: dict) -> int | None:
    # torch.Generator.manual_seed takes any 64-bit value, signed or not
    return _bounded(body, "seed", _as_int, None, lambda s: -2**63 <= s < 2**64, "a 64-bit integer")


def _logit_bias(body: dict) -> tuple[tuple[int, float], ...]:
    # {"50256": -100}: keys are token ids written as strings (JSON keys are strings); the server checks them
    # against the vocabulary size, which is not known here
    bias: dict[int, float] = {}
    for key, value in _read(body, "logit_bias", _as_object, {}).items():
        _check(key.isascii() and key.isdigit() and len(key) <= 10, "logit_bias", "Invalid 'logit_bias': keys are "
               f"token ids written as strings, such as \"50256\", but got {ascii(key[:40])}.", "invalid_value")
        label = f"logit_bias.{key}"
        value = float(_as_number(value, label))
        _check(-100 <= value <= 100, label, f"Invalid '{label}': expected a value in [-100, 100], but got {value}.")
        bias[int(key)] = value
    return tuple(sorted(bias.items()))


def _include_usage(body: dict, stream: bool) -> bool:
    options = _read(body, "stream_options", _as_object)
    if options is None:
        return False
    _check(stream, "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is true.")
    return _read(options, "include_usage", _as_bool, False, within="stream_options")


# --- chat ------------------------------------------------------------------------------------------------------------

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_REASONING_EFFORTS = ("minimal", "low", "medium", "high")


def _messages(body: dict) -> tuple[dict, ...]:
    messages = _required(body, "messages", _of_type(list, "an array of messages"))
    _check(messages, "messages", "Invalid 'messages': expected at least one message, but got an empty array.")
    calls: dict[str, str] = {}  # tool-call id -> function name, of the calls made so far
    return tuple(_message(message, f"messages[{i}]", calls) for i, message in enumerate(messages))


def _message(message: object, label: str, calls: dict[str, str]) -> dict:
    _as_object(message, label)
    role = _required(message, "role", _as_str, within=label)
    _check(role in _ROLES, label, f"Invalid '{label}.role': {role!r} is not supported; expected one of "
           "'system', 'developer', 'user', 'assistant', 'tool'.", "unsupported_value")
    out = {"role": _ROLES[role], "content": _content(message, label, role)}
    if role == "assistant":
        tool_calls = assistant_calls(message, label)
        calls.update((call["id"], call["function"]["name"]) for call in tool_calls)
        out.update({"tool_calls": tool_calls} if tool_calls else {})
        reasoning = _read(message, "reasoning_content", _as_str, within=label)
        out.update({"reasoning_content": reasoning} if reasoning else {})
    elif role == "tool":
        out.update(tool_result(message, label, calls))
    return out


def template_kwargs(body: dict) -> dict:
    """`chat_template_kwargs` (vLLM's and llama.cpp's: e.g. enable_thinking) and OpenAI's `reasoning_effort`, which
    gpt-oss's template reads; both become template variables."""
    kwargs = dict(_read(body, "chat_template_kwargs", _as_object, {}))
    for key in ("messages", "tools", "add_generation_prompt", "bos_token", "eos_token"):
        _check(key not in kwargs, "chat_template_kwargs", f"Invalid 'chat_template_kwargs': {key!r} is set by the "
               "server, not by the request.", "invalid_value")
    effort = _read(body, "reasoning_effort", _as_str)
    if effort is not None:
        _check(effort in _REASONING_EFFORTS, "reasoning_effort", f"Invalid 'reasoning_effort': {effort!r} is not "
               "one of 'minimal', 'low', 'medium', 'high'.", "invalid_value")
        kwargs["reasoning_effort"] = effort
    return kwargs


def _content(message: dict, label: str, role: str) -> str:
    # an assistant turn that only carried tool calls has no content
    if message.get("content") is None and role == "assistant":
        return ""
    content = _required(message, "content", within=label)
    if isinstance(content, str):
        return _as_str(content, f"{label}.content")
    if not isinstance(content, list):
        raise _type_error(f"{label}.content", "a string or an array of content parts", content)
    # separate parts are separate pieces of text: a newline keeps their words apart, as vLLM does
    return "\n".join(_text_part(part, f"{label}.content[{i}]") for i, part in enumerate(content))


def _text_part(part: object, label: str) -> str:
    _as_object(part, label)
    kind = _required(part, "type", _as_str, within=label)
    _check(kind == "text", label, f"Invalid '{label}.type': only 'text' content parts are supported, "
           f"got {kind!r}.", "unsupported_value")
    return _required(part, "text", _as_str, within=label)


def _chat_logprobs(body: dict) -> tuple[bool, int]:
    wanted = _read(body, "logprobs", _as_bool, False)
    top = _bounded(body, "top_logprobs", _as_int, None, lambda k: 0 <= k <= 20, "a value in [0, 20]")
    _check(top is None or wanted, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true.")
    return wanted, top or 0


# --- completions -----------------------------------------------------------------------------------------------------

def _completion_logprobs(body: dict) -> tuple[bool, int]:
    # the legacy API's logprobs is the number of alternatives per token: null = off, 0 = only the chosen token's
    top = _bounded(body, "logprobs", _as_int, None, lambda k: 0 <= k <= 5, "a value in [0, 5]")
    return top is not None, top or 0


def _prompt(value: object) -> str | tuple[int, ...]:
    # the API takes a batch (a list of strings or of id lists); this server runs one prompt per request
    if isinstance(value, list) and value and all(isinstance(item, (str, list)) for item in value):
        _check(len(value) == 1, "prompt", "Only one prompt per request is supported.", "unsupported_value")
        value = value[0]
    if isinstance(value, str):
        _check(value, "prompt", "Invalid 'prompt': expected a non-empty string.")
        return _as_str(value, "prompt")
    if not isinstance(value, list):
        raise _type_error("prompt", "a string or an array of token ids", value)
    _check(value, "prompt", "Invalid 'prompt': expected at least one token id, but got an empty array.")
    return tuple(_token_id(token, f"prompt[{i}]") for i, token in enumerate(value))


def _token_id(value: object, label: str) -> int:
    token = _as_int(value, label)
    _check(token >= 0, label, f"Invalid '{label}': token ids are >= 0, but got {token}.")
    return token
