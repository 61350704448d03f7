"""Type confusion against the tool, Responses and Messages endpoints: every field of a valid request (at every
depth) replaced by each JSON type in turn is answered with the API's own error JSON and a 4xx, or, where the
value happens to be acceptable, a normal reply; never a 500, and the server serves as before."""

from __future__ import annotations

import copy
import json

import pytest

from tests.server.test_api import MODEL, post
from tests.server.test_hostile import value
from tests.server.test_tools_api import WEATHER

SCHEMA = WEATHER["function"]["parameters"]
VALID = {
    "/v1/chat/completions": {
        "model": MODEL, "max_tokens": 2, "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
        "chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "Weather?"},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "rain"}]},
    "/v1/responses": {
        "model": MODEL, "max_output_tokens": 2, "instructions": "Be brief.", "tools": [{"type": "function",
                                                                                    **WEATHER["function"]}],
        "tool_choice": {"type": "function", "name": "weather"}, "text": {"format": {"type": "json_schema",
                                                                                   "name": "w", "schema": SCHEMA}},
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                  {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "rain"}]},
    "/v1/messages": {
        "model": MODEL, "max_tokens": 2, "system": [{"type": "text", "text": "Be brief."}],
        "tools": [{"name": "weather", "input_schema": SCHEMA}], "tool_choice": {"type": "tool", "name": "weather"},
        "stop_sequences": ["\n"], "thinking": {"type": "disabled"},
        "messages": [{"role": "user", "content": "Weather?"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather",
                                                        "input": {"city": "Oslo", "hot": False}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "rain"}]}]},
}
REPLACEMENTS = [None, 7, -1.5, "x", "", [], {}, True, [[[]]], {"type": 3}]


def paths(value, prefix=()):
    """Every place in a JSON value: (path, ...) for dict keys and list indexes, the root's children first."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


def replaced(body: dict, path: tuple, new) -> dict:
    out = copy.deepcopy(body)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


@pytest.mark.parametrize("endpoint", list(VALID))
def test_every_field_of_every_type_is_a_clean_answer(server, endpoint):
    errors_before = value(server, "moestream_requests_total", status="500")
    status, body = post(server, endpoint, json.dumps(VALID[endpoint]).encode())
    assert status == 200, body
    seen = 0
    for path in paths(VALID[endpoint]):
        for new in REPLACEMENTS:
            status, body = post(server, endpoint, json.dumps(replaced(VALID[endpoint], path, new)).encode())
            assert status < 500, (path, new, body)
            if status >= 400:
                seen += 1
                if endpoint == "/v1/messages":
                    assert body["type"] == "error" and body["error"]["message"], (path, new, body)
                else:
                    assert body["error"]["message"] and "param" in body["error"], (path, new, body)
    assert seen > 50
    assert value(server, "moestream_requests_total", status="500") == errors_before == 0
    assert post(server, endpoint, json.dumps(VALID[endpoint]).encode())[0] == 200
