"""Anthropic's Messages API with the official `anthropic` client against a real server: text replies whole and
streamed (the named events in order), stop sequences, count_tokens, a tool round trip forced with
`tool_choice: any` (tool_use blocks, input_json_delta, tool_result back), x-api-key auth, and Anthropic-shaped
errors."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

from tests.server.conftest import API_KEY
from tests.server.test_api import MODEL
from tests.server.test_tools_api import WEATHER

TOOL = {"name": "weather", "description": "", "input_schema": WEATHER["function"]["parameters"]}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=60)


def _stream_events(claude, **kw) -> list:
    with claude.messages.stream(model=MODEL, max_tokens=kw.pop("max_tokens", 24), messages=kw.pop("messages", ASK),
                                **kw) as stream:
        return list(stream)


def test_text_reply_whole_and_streamed_agree(claude):
    whole = claude.messages.create(model=MODEL, max_tokens=16, messages=ASK, extra_body={"temperature": 0})
    assert whole.type == "message" and whole.role == "assistant" and whole.stop_reason == "max_tokens"
    assert whole.usage.output_tokens == 16 and whole.usage.input_tokens > 0
    assert [b.type for b in whole.content] == ["text"] and whole.content[0].text
    events = _stream_events(claude, max_tokens=16, extra_body={"temperature": 0})
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_start" in kinds
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == whole.content[0].text
    final = next(e for e in events if e.type == "message_delta")
    assert final.delta.stop_reason == "max_tokens" and final.usage.output_tokens == 16


def test_system_and_stop_sequences(claude):
    greedy = dict(model=MODEL, max_tokens=24, messages=ASK, system="Be brief.", extra_body={"temperature": 0})
    text = claude.messages.create(**greedy).content[0].text
    stop = text.strip().split()[2]
    r = claude.messages.create(**greedy, stop_sequences=[stop])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop
    assert stop not in r.content[0].text and text.startswith(r.content[0].text)


def test_count_tokens_equals_the_prompt_usage(claude):
    counted = claude.messages.count_tokens(model=MODEL, messages=ASK, system="Be brief.")
    used = claude.messages.create(model=MODEL, max_tokens=1, messages=ASK, system="Be brief.")
    assert counted.input_tokens == used.usage.input_tokens


def test_forced_tool_use_whole_then_result(claude):
    r = claude.messages.create(model=MODEL, max_tokens=90, messages=ASK, tools=[TOOL],
                               tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert r.stop_reason == "tool_use"
    use = next(b for b in r.content if b.type == "tool_use")
    assert use.name == "weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, TOOL["input_schema"])
    follow = [*ASK, {"role": "assistant", "content": [b.model_dump() for b in r.content if b.type == "tool_use"]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}]}]
    after = claude.messages.create(model=MODEL, max_tokens=8, messages=follow, tools=[TOOL],
                                   tool_choice={"type": "none"})
    assert after.stop_reason in ("end_turn", "max_tokens") and after.content[0].type == "text"


def test_forced_tool_use_streams_input_json_deltas(claude):
    events = _stream_events(claude, max_tokens=90, tools=[TOOL],
                            tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True})
    start = next(e for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use")
    assert start.content_block.name == "weather"
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    jsonschema.validate(json.loads(partial), TOOL["input_schema"])
    assert next(e for e in events if e.type == "message_delta").delta.stop_reason == "tool_use"


def test_wrong_key_is_an_authentication_error(server):
    bad = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model=MODEL, max_tokens=4, messages=ASK)
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("kw, says", [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type":
                                                 "image/png", "data": "AA=="}}]}]}, "'image' content blocks"),
    ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [TOOL]}, "'nope'"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]},
     "no earlier tool_use"),
    ({"extra_body": {"temperature": 1.5}}, "temperature"),
    ({"messages": [{"role": "system", "content": "x"}]}, "'user', 'assistant'"),
])
def test_bad_requests_are_400_invalid_request_errors(claude, kw, says):
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model=MODEL, max_tokens=4, **{"messages": ASK, **kw})
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert says in body["error"]["message"], body


def test_missing_max_tokens_is_a_400(server):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(server.url + "/v1/messages", method="POST",
                                 data=json.dumps({"model": MODEL, "messages": ASK}).encode(),
                                 headers={"x-api-key": API_KEY, "content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert "max_tokens" in json.loads(err.value.read())["error"]["message"]
