"""OpenAI's Responses API with the official `openai` client against a real server: text whole and streamed (the
client's own stream accumulator checks the typed events), instructions, structured output through `text.format`,
a function-call round trip forced with `tool_choice: required`, and errors."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.server.test_api import MODEL
from tests.server.test_tools_api import WEATHER

TOOL = {"type": "function", **WEATHER["function"]}  # the Responses API's flat tool form


def test_text_whole_and_streamed_agree(client):
    whole = client.responses.create(model=MODEL, input="Weather in Oslo?", max_output_tokens=16, temperature=0)
    assert whole.status == "incomplete" and whole.incomplete_details.reason == "max_output_tokens"
    assert whole.output_text and whole.usage.output_tokens == 16 and whole.usage.input_tokens > 0
    with client.responses.stream(model=MODEL, input="Weather in Oslo?", max_output_tokens=16,
                                 temperature=0) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.incomplete"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert events[-1].response.output_text == whole.output_text


def test_instructions_and_message_items(client):
    r = client.responses.create(model=MODEL, instructions="Be brief.", max_output_tokens=8, temperature=0,
                                input=[{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
                                       {"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
                                       {"role": "user", "content": "And then?"}])
    assert r.instructions == "Be brief." and r.output[0].type == "message" and r.output_text


def test_text_format_json_schema(client):
    schema = WEATHER["function"]["parameters"]
    r = client.responses.create(model=MODEL, input="Weather?", max_output_tokens=120, extra_body={"seed": 3},
                                text={"format": {"type": "json_schema", "name": "weather", "schema": schema,
                                                 "strict": True}})
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), schema)


def test_function_call_round_trip_whole(client):
    r = client.responses.create(model=MODEL, input="Weather in Oslo?", tools=[TOOL], tool_choice="required",
                                parallel_tool_calls=False, max_output_tokens=90, extra_body={"seed": 2})
    call = next(item for item in r.output if item.type == "function_call")
    assert call.name == "weather" and call.call_id.startswith("call_") and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), TOOL["parameters"])
    follow = [{"role": "user", "content": "Weather in Oslo?"},
              {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
              {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}]
    after = client.responses.create(model=MODEL, input=follow, tools=[TOOL], tool_choice="none",
                                    max_output_tokens=8, extra_body={"seed": 2})
    assert after.output[0].type == "message"


def test_function_call_streams_argument_deltas(client):
    with client.responses.stream(model=MODEL, input="Weather in Oslo?", tools=[TOOL], parallel_tool_calls=False,
                                 tool_choice={"type": "function", "name": "weather"}, max_output_tokens=90,
                                 extra_body={"seed": 5}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments
    jsonschema.validate(json.loads(deltas), TOOL["parameters"])
    assert [i.type for i in final.output] == ["function_call"] and final.status == "completed"


@pytest.mark.parametrize("kw, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "r"}]}, "input"),
    ({"input": [{"type": "image_generation_call", "id": "x"}]}, "input"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "frob"}}}}, "response_format"),
])
def test_bad_requests_are_400(client, kw, param):
    args = {"model": MODEL, "input": "x", "max_output_tokens": 4, **kw}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(**args)
    assert err.value.body["param"] == param, err.value.body
