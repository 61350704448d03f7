"""Structured output (`response_format`), enforced by constrained decoding: every reply validates against its
schema (jsonschema) at temperature 1, streamed and whole, several requests batched together; a schema the grammar
engine cannot compile is a 400 that names the problem."""

from __future__ import annotations

import concurrent.futures
import json

import jsonschema
import openai
import pytest

from tests.server.test_api import MODEL

NAME = {"type": "string", "maxLength": 12}
AGE = {"type": "integer", "minimum": 0, "maximum": 120}
SCHEMAS = [
    {"type": "object", "properties": {"name": NAME}, "required": ["name"], "additionalProperties": False},
    {"type": "object", "properties": {"name": NAME, "age": AGE}, "required": ["name", "age"]},
    {"type": "object", "properties": {"mood": {"enum": ["happy", "sad", "cross"]}}, "required": ["mood"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "score": {"type": "number", "minimum": 0,
                                                                           "maximum": 1}},
     "required": ["ok", "score"], "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]},
                                               "minItems": 1, "maxItems": 3}}, "required": ["tags"]},
    {"type": "object", "properties": {"who": {"type": "object", "properties": {"first": NAME, "last": NAME},
                                              "required": ["first", "last"], "additionalProperties": False}},
     "required": ["who"], "additionalProperties": False},
    {"type": "object", "properties": {"name": NAME, "nick": NAME}, "required": ["name"],
     "additionalProperties": False},  # an optional property
    {"$defs": {"person": {"type": "object", "properties": {"name": NAME, "age": AGE}, "required": ["name", "age"],
                          "additionalProperties": False}},
     "type": "object", "properties": {"author": {"$ref": "#/$defs/person"}, "editor": {"$ref": "#/$defs/person"}},
     "required": ["author", "editor"], "additionalProperties": False},
    {"type": "array", "items": AGE, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}},
     "required": ["id"], "additionalProperties": False},
    {"type": "object", "properties": {"value": {"anyOf": [AGE, {"type": "null"}]}}, "required": ["value"],
     "additionalProperties": False},
    {"type": "object", "properties": {"kind": {"const": "point"}, "x": AGE, "y": AGE},
     "required": ["kind", "x", "y"], "additionalProperties": False},
    {"type": "object", "properties": {"rows": {"type": "array", "maxItems": 2, "items": {
        "type": "array", "items": {"type": "integer", "minimum": -9, "maximum": 9}, "minItems": 1, "maxItems": 3}}},
     "required": ["rows"], "additionalProperties": False},
    {"type": "object", "properties": {"date": {"type": "string", "format": "date"}}, "required": ["date"],
     "additionalProperties": False},
    {"type": "object", "properties": {"level": {"type": "integer", "enum": [1, 2, 3]},
                                      "label": {"type": "string", "minLength": 2, "maxLength": 6}},
     "required": ["level", "label"], "additionalProperties": False},
    {"type": "object", "properties": {"shape": {"oneOf": [
        {"type": "object", "properties": {"r": AGE}, "required": ["r"], "additionalProperties": False},
        {"type": "object", "properties": {"w": AGE, "h": AGE}, "required": ["w", "h"], "additionalProperties": False},
    ]}}, "required": ["shape"], "additionalProperties": False},
    {"$defs": {"node": {"type": "object", "properties": {"v": AGE, "next": {"anyOf": [{"$ref": "#/$defs/node"},
                                                                                      {"type": "null"}]}},
                        "required": ["v", "next"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},  # recursive, as a linked list
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"enum": ["x", "y"]}}, "required": ["c"], "additionalProperties": False}}, "required": ["b"],
        "additionalProperties": False}}, "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"price": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                                      "currency": {"enum": ["EUR", "USD"]}},
     "required": ["price", "currency"], "additionalProperties": False},
    {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                                      "why": {"type": "string", "maxLength": 20}},
     "required": ["answer"], "additionalProperties": False},
]


def _format(schema: dict, i: int) -> dict:
    return {"type": "json_schema", "json_schema": {"name": f"schema_{i}", "schema": schema, "strict": True}}


def _ask(client, schema: dict, i: int, stream: bool) -> tuple[str, str]:
    args = dict(model=MODEL, messages=[{"role": "user", "content": f"Describe thing number {i}."}],
                response_format=_format(schema, i), temperature=1.0, seed=i, max_tokens=200)
    if not stream:
        r = client.chat.completions.create(**args)
        return r.choices[0].message.content, r.choices[0].finish_reason
    text, reason = [], None
    for part in client.chat.completions.create(stream=True, **args):
        if part.choices:
            text.append(part.choices[0].delta.content or "")
            reason = part.choices[0].finish_reason or reason
    return "".join(text), reason


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_every_reply_validates_against_its_schema(client, stream):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # batched: masks for several sequences per step
        replies = list(pool.map(lambda a: _ask(client, *a, stream), [(s, i) for i, s in enumerate(SCHEMAS)]))
    for i, (schema, (text, reason)) in enumerate(zip(SCHEMAS, replies)):
        assert reason == "stop", (i, text)  # the grammar ended the reply, not the token limit
        jsonschema.validate(json.loads(text), schema)


def test_json_object_gives_an_object(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}],
                                       response_format={"type": "json_object"}, temperature=1.0, seed=3,
                                       max_tokens=200)
    text = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # a free object may run to the limit; what there is must still be an object's beginning
        assert text.lstrip().startswith("{")


def test_same_seed_same_structured_output(client):
    assert _ask(client, SCHEMAS[7], 7, False) == _ask(client, SCHEMAS[7], 7, True)


def test_text_format_is_free_text(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       response_format={"type": "text"}, temperature=0, max_tokens=8)
    assert r.choices[0].finish_reason == "length"


@pytest.mark.parametrize("schema, says", [
    ({"type": "frob"}, "frob"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "missing"),
    ({"type": "string", "pattern": "(("}, "regex"),
])
def test_uncompilable_schema_is_a_400_naming_the_problem(client, schema, says):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       response_format=_format(schema, 0), max_tokens=4)
    body = err.value.body
    assert body["param"] == "response_format" and says in body["message"], body
    assert "schema_0" in body["message"]


@pytest.mark.parametrize("fmt, says", [
    ({"type": "yaml"}, "'text', 'json_object', 'json_schema'"),
    ({"type": "json_schema"}, "json_schema"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "name"),
    ({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}, "letters, digits"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": [1]}}, "expected an object"),
])
def test_malformed_response_format_is_refused(client, fmt, says):
    with pytest.raises((openai.BadRequestError, openai.UnprocessableEntityError)) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       response_format=fmt, max_tokens=4)
    assert says in err.value.body["message"], err.value.body
