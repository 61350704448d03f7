"""Tool calls through /v1/chat/completions with the official `openai` client: `tool_choice: required` (and a named
tool) makes even the tiny embedded model produce a valid call, because the grammar forces the family's call format
with the tool's schema; streamed as deltas (id and name first, then argument fragments) and whole; the result
goes back as a `tool` message."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.server.test_api import MODEL

# small: the embedded model's context is 256 tokens, and its template, which ignores tools, gets them listed in a
# system message
WEATHER = {"type": "function", "function": {
    "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 9}},
                                      "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "time"}}  # no parameters: its arguments are {}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


def _schema(name: str) -> dict:
    return WEATHER["function"]["parameters"] if name == "weather" else {"const": {}}


def _whole(client, **kw):
    kw.setdefault("parallel_tool_calls", False)  # one call fits the 256-token context; a second may not
    kw.setdefault("temperature", 1.0)
    kw.setdefault("max_tokens", 90)
    return client.chat.completions.create(model=MODEL, messages=kw.pop("messages", ASK), tools=[WEATHER, TIME], **kw)


def _streamed(client, **kw) -> tuple[dict[int, dict], str | None, str, list]:
    """(calls by index {'id', 'name', 'arguments'}, finish_reason, content, every tool_calls delta)."""
    calls, reason, content, deltas = {}, None, [], []
    kw.setdefault("parallel_tool_calls", False)
    kw.setdefault("max_tokens", 90)
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], temperature=1.0,
                                            stream=True, **kw)
    for part in stream:
        if not part.choices:
            continue
        choice = part.choices[0]
        reason = choice.finish_reason or reason
        content.append(choice.delta.content or "")
        for d in choice.delta.tool_calls or []:
            deltas.append(d)
            call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or d.id
            call["name"] = call["name"] or (d.function.name if d.function else None)
            call["arguments"] += (d.function.arguments or "") if d.function else ""
    return calls, reason, "".join(content), deltas


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_gives_a_valid_call_whole(client, seed):
    r = _whole(client, tool_choice="required", seed=seed)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls, choice.message
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in ("weather", "time")
        jsonschema.validate(json.loads(call.function.arguments), _schema(call.function.name))


def test_named_tool_and_no_parallel_gives_exactly_that_call(client):
    r = _whole(client, tool_choice={"type": "function", "function": {"name": "time"}}, seed=4)
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["time"]
    assert json.loads(calls[0].function.arguments) == {}


@pytest.mark.parametrize("seed", [1, 5])
def test_required_streams_the_name_first_then_argument_fragments(client, seed):
    calls, reason, _, deltas = _streamed(client, tool_choice="required", seed=seed)
    assert reason == "tool_calls" and calls
    first = deltas[0]
    assert first.id and first.function.name and first.type == "function"
    assert all(d.id is None for d in deltas if d is not first and d.index == first.index)
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), _schema(call["name"]))


def test_parallel_calls_are_each_reported(client):
    # room for one call and the start of another: every call is reported; only the last, cut off by the token
    # limit, may have partial arguments (as OpenAI reports a call cut off by max_tokens)
    r = _whole(client, tool_choice="required", parallel_tool_calls=True, seed=1)
    calls, reason = r.choices[0].message.tool_calls, r.choices[0].finish_reason
    assert calls and reason in ("tool_calls", "length")
    complete = calls[:-1] if reason == "length" else calls
    for call in complete:
        jsonschema.validate(json.loads(call.function.arguments), _schema(call.function.name))


def test_stream_and_whole_agree_for_the_same_seed(client):
    whole = _whole(client, tool_choice="required", seed=7).choices[0].message.tool_calls
    streamed, _, _, _ = _streamed(client, tool_choice="required", seed=7)
    assert [(c.function.name, c.function.arguments) for c in whole] == \
        [(c["name"], c["arguments"]) for c in streamed.values()]


def test_tool_result_round_trip(client):
    first = _whole(client, tool_choice="required", seed=2).choices[0].message
    call = first.tool_calls[0]
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                         "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "content": "12 degrees and rain"}]
    r = _whole(client, messages=messages, tool_choice="none", seed=2)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")


def test_auto_lets_the_model_answer_in_text(client):
    r = _whole(client, tool_choice="auto", seed=1, temperature=0)
    assert r.choices[0].message.content or r.choices[0].message.tool_calls


@pytest.mark.parametrize("kw, param", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "frob"}}}],
      "tool_choice": "required"}, "tools"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "r"}]}, "messages"),
])
def test_bad_tool_requests_are_400(client, kw, param):
    tools = kw.pop("tools", [WEATHER])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=kw.pop("messages", ASK), tools=tools, max_tokens=8, **kw)
    assert err.value.body["param"] == param, err.value.body


def test_a_call_cut_off_by_the_limit_is_one_partial_call_in_both_forms(client):
    whole = _whole(client, tool_choice="required", seed=3, max_tokens=20)
    choice = whole.choices[0]
    assert choice.finish_reason == "length" and "<tool_call>" not in (choice.message.content or "")
    assert len(choice.message.tool_calls) == 1 and choice.message.tool_calls[0].function.name == "weather"
    calls, reason, content, _ = _streamed(client, tool_choice="required", seed=3, max_tokens=20)
    assert reason == "length" and "<tool_call>" not in content  # announced as a call: not repeated as text
    assert calls[0]["arguments"] == choice.message.tool_calls[0].function.arguments
