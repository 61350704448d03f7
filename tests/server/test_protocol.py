"""Request parsing for the OpenAI-compatible server: defaults, accepted forms, and the status/param of every error."""

from __future__ import annotations

import pytest

from moestream.engine import SamplingParams
from moestream.errors import ConfigError
from moestream.server import protocol
from moestream.server.protocol import (APIError, malformed_json, model_not_found, overloaded, parse_chat,
                                       parse_completion, too_large, unauthorized, unavailable)

USER = [{"role": "user", "content": "hi"}]


def chat(**fields) -> dict:
    return {"model": "m", "messages": USER, **fields}


def completion(**fields) -> dict:
    return {"model": "m", "prompt": "Once", **fields}


def error_of(parse, body) -> APIError:
    with pytest.raises(APIError) as caught:
        parse(body)
    return caught.value


def assert_openai_shape(error: APIError) -> None:
    body = error.body()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == error.message and body["error"]["type"] == error.type
    assert body["error"]["param"] == error.param and body["error"]["code"] == error.code


# --- accepted requests -----------------------------------------------------------------------------------------------

def test_minimal_chat_gets_the_server_defaults():
    request = parse_chat(chat())
    assert request.model == "m" and request.messages == ({"role": "user", "content": "hi"},)
    o = request.options
    assert (o.max_tokens, o.stop, o.logprobs, o.top_logprobs, o.stream, o.include_usage, o.user) == (
        None, (), False, 0, False, False, None)
    assert o.sampling == SamplingParams()  # what the request leaves out is the CLI's (serve's --temp etc. otherwise)
    custom = SamplingParams(temperature=0.3, top_k=5, top_p=0.5, min_p=0.1, repeat_penalty=1.1)
    assert parse_chat(chat(), custom).options.sampling == custom
    given = parse_chat(chat(temperature=1.0, top_k=0, min_p=0, repetition_penalty=1.0), custom).options.sampling
    assert (given.temperature, given.top_k, given.min_p, given.repeat_penalty, given.top_p) == (1.0, 0, 0.0, 1.0, 0.5)


def test_minimal_completion_gets_defaults():
    request = parse_completion(completion())
    assert (request.model, request.prompt, request.echo) == ("m", "Once", False)
    assert request.options == parse_chat(chat()).options


def test_sampling_fields_reach_sampling_params():
    s = parse_chat(chat(temperature=0, top_p=0.5, presence_penalty=-2, frequency_penalty=1.5, seed=7)).options.sampling
    assert (s.temperature, s.top_p, s.presence_penalty, s.frequency_penalty, s.seed) == (0.0, 0.5, -2.0, 1.5, 7)
    assert s.greedy and isinstance(s.temperature, float)


def test_null_means_absent():
    nulls = dict.fromkeys(["max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "stream_options",
                           "logprobs", "top_logprobs", "user", "tools", "response_format"])
    assert parse_chat(chat(**nulls)).options == parse_chat(chat()).options


def test_unknown_fields_are_ignored():
    extras = {"tool_choice": "none", "metadata": {}, "store": False, "x_custom": [1], "\ud800": "\udfff"}
    assert parse_chat(chat(**extras)).options == parse_chat(chat()).options
    assert parse_completion(completion(suffix=None, **extras)).options == parse_completion(completion()).options


@pytest.mark.parametrize("extra", [{"tools": []}, {"functions": []}, {"response_format": {"type": "text"}}])
def test_requests_for_nothing_we_lack_are_accepted(extra):
    parse_chat(chat(**extra))


@pytest.mark.parametrize("stop, expected", [("\n", ("\n",)), (["a", "bc"], ("a", "bc")), ([], ()),
                                            (["1", "2", "3", "4"], ("1", "2", "3", "4"))])
def test_stop_string_is_wrapped(stop, expected):
    assert parse_chat(chat(stop=stop)).options.stop == expected
    assert parse_completion(completion(stop=stop)).options.stop == expected


def test_content_parts_are_joined_and_roles_normalised():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    messages = [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": parts, "name": "x"},
                {"role": "assistant", "content": None}, {"role": "system", "content": ""}]
    assert parse_chat(chat(messages=messages)).messages == (
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": ""}, {"role": "system", "content": ""})


@pytest.mark.parametrize("fields, expected", [({"max_tokens": 5}, 5), ({"max_completion_tokens": 7}, 7),
                                              ({"max_completion_tokens": 7, "max_tokens": 5}, 7),
                                              ({"max_tokens": 16.0}, 16)])
def test_max_completion_tokens_preferred_over_max_tokens(fields, expected):
    max_tokens = parse_chat(chat(**fields)).options.max_tokens
    assert max_tokens == expected and type(max_tokens) is int


def test_integral_floats_are_taken_as_ints():
    seed = parse_chat(chat(seed=3.0)).options.sampling.seed
    assert seed == 3 and type(seed) is int
    assert parse_completion(completion(prompt=[1.0, 2], max_tokens=4.0)).prompt == (1, 2)


@pytest.mark.parametrize("logprobs, expected", [(3, (True, 3)), (0, (True, 0)), (5, (True, 5)), (None, (False, 0))])
def test_completion_logprobs_is_a_count(logprobs, expected):
    options = parse_completion(completion(logprobs=logprobs)).options
    assert (options.logprobs, options.top_logprobs) == expected


@pytest.mark.parametrize("fields, expected", [({"logprobs": True, "top_logprobs": 2}, (True, 2)),
                                              ({"logprobs": True}, (True, 0)), ({"logprobs": False}, (False, 0)),
                                              ({"logprobs": True, "top_logprobs": 20}, (True, 20))])
def test_chat_logprobs(fields, expected):
    options = parse_chat(chat(**fields)).options
    assert (options.logprobs, options.top_logprobs) == expected


def test_streaming_with_usage_and_user():
    options = parse_chat(chat(stream=True, stream_options={"include_usage": True}, user="u1")).options
    assert (options.stream, options.include_usage, options.user) == (True, True, "u1")
    assert parse_chat(chat(stream=True, stream_options={})).options.include_usage is False


@pytest.mark.parametrize("prompt, expected", [("hi", "hi"), (["hi"], "hi"), ([1, 0, 2], (1, 0, 2)),
                                              ([[5, 6]], (5, 6))])
def test_prompt_forms(prompt, expected):
    assert parse_completion(completion(prompt=prompt)).prompt == expected


def test_echo():
    assert parse_completion(completion(echo=True)).echo is True


def test_logit_bias_reaches_sampling_params():
    bias = parse_chat(chat(logit_bias={"50256": -100, "7": 2.5, "0": 100, "07": 1})).options.sampling.logit_bias
    assert bias == ((0, 100.0), (7, 1.0), (50256, -100.0))  # "07" names token 7 too: the last one given wins
    assert parse_completion(completion(logit_bias={})).options == parse_completion(completion()).options


def test_empty_suffix_asks_for_nothing():
    assert parse_completion(completion(suffix="")).options == parse_completion(completion()).options


# --- errors ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parse", [parse_chat, parse_completion])
@pytest.mark.parametrize("body", [[], [chat()], 5, "text", None, True])
def test_body_that_is_not_an_object_is_400(parse, body):
    error = error_of(parse, body)
    assert (error.status, error.param, error.type) == (400, None, "invalid_request_error")
    assert_openai_shape(error)


CHAT_422 = [
    ({"model": None}, "model"), ({"model": 5}, "model"), ({"messages": None}, "messages"),
    ({"messages": "hi"}, "messages"), ({"messages": ["hi"]}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages"),
    ({"messages": [{"role": 1, "content": "x"}]}, "messages"), ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"text": "a"}]}]}, "messages"),
    ({"max_tokens": "ten"}, "max_tokens"), ({"max_tokens": True}, "max_tokens"), ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_completion_tokens": "5"}, "max_completion_tokens"), ({"temperature": "hot"}, "temperature"),
    ({"temperature": False}, "temperature"), ({"top_p": [1]}, "top_p"),
    ({"presence_penalty": "0"}, "presence_penalty"),
    ({"frequency_penalty": {}}, "frequency_penalty"), ({"seed": "1"}, "seed"), ({"seed": 1.5}, "seed"),
    ({"stream": "yes"}, "stream"), ({"stream": 1}, "stream"), ({"stop": 5}, "stop"), ({"stop": ["a", 1]}, "stop"),
    ({"stream": True, "stream_options": "usage"}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options"),
    ({"logprobs": 1}, "logprobs"), ({"logprobs": True, "top_logprobs": "2"}, "top_logprobs"), ({"user": 5}, "user"),
    ({"n": "1"}, "n"), ({"logit_bias": [1]}, "logit_bias"), ({"logit_bias": {"5": "1"}}, "logit_bias"),
    ({"logit_bias": {"5": None}}, "logit_bias"),
]


@pytest.mark.parametrize("fields, param", CHAT_422)
def test_chat_missing_or_wrong_type_is_422(fields, param):
    error = error_of(parse_chat, chat(**fields))
    assert (error.status, error.param, error.type) == (422, param, "invalid_request_error")
    assert param in error.message
    assert_openai_shape(error)


def test_type_error_message_names_field_and_expected_type():
    error = error_of(parse_chat, chat(max_tokens="ten"))
    assert error.message == "Invalid type for 'max_tokens': expected an integer, but got a string instead."
    error = error_of(parse_chat, chat(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": 1}]))
    assert "'messages[1].content'" in error.message and "a string or an array of content parts" in error.message


@pytest.mark.parametrize("missing", ["model", "messages"])
def test_chat_missing_required_field_is_422(missing):
    body = chat()
    del body[missing]
    error = error_of(parse_chat, body)
    assert (error.status, error.param) == (422, missing) and missing in error.message


CHAT_400 = [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": -5}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"), ({"temperature": 3}, "temperature"),
    ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"), ({"temperature": 10**400}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.01}, "top_p"), ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"), ({"seed": 2**64}, "seed"), ({"seed": -2**63 - 1}, "seed"),
    ({"n": 2}, "n"), ({"n": 0}, "n"), ({"logprobs": True, "top_logprobs": 25}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"), ({"messages": []}, "messages"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": ""}, "stop"), ({"stop": ["a", ""]}, "stop"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "call_1"}]}, "messages"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools"), ({"tool_choice": "required"}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": 3}}}, "response_format"),
    ({"logit_bias": {"5": 101}}, "logit_bias"), ({"logit_bias": {"5": -100.5}}, "logit_bias"),
    ({"logit_bias": {"-5": 1}}, "logit_bias"), ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"1e3": 1}}, "logit_bias"), ({"logit_bias": {"²": 1}}, "logit_bias"),
    ({"logit_bias": {"9" * 5000: 1}}, "logit_bias"), ({"logit_bias": {"5": float("nan")}}, "logit_bias"),
    # JSON's "\ud800" decodes to a lone surrogate: no Unicode text, so a bad value wherever a string is read
    ({"model": "m\ud800"}, "model"), ({"messages": [{"role": "user", "content": "a\ud800b"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]}, "messages"),
    ({"messages": [{"role": "\ud800", "content": "x"}]}, "messages"), ({"stop": ["\ud800"]}, "stop"),
    ({"user": "\udc00"}, "user"),
]


@pytest.mark.parametrize("fields, param", CHAT_400)
def test_chat_invalid_value_is_400(fields, param):
    error = error_of(parse_chat, chat(**fields))
    assert (error.status, error.param, error.type) == (400, param, "invalid_request_error")
    assert_openai_shape(error)


def test_response_formats_are_read():
    assert parse_chat(chat(response_format={"type": "text"})).options.response_format is None
    assert parse_chat(chat(response_format={"type": "json_object"})).options.response_format.kind == "json_object"
    spec = {"name": "person", "schema": {"type": "object"}, "strict": True}
    fmt = parse_chat(chat(response_format={"type": "json_schema", "json_schema": spec})).options.response_format
    assert (fmt.kind, fmt.schema, fmt.name, fmt.strict) == ("json_schema", {"type": "object"}, "person", True)
    no_schema = {"type": "json_schema", "json_schema": {"name": "any"}}  # OpenAI's schema is optional
    assert parse_chat(chat(response_format=no_schema)).options.response_format.kind == "json_object"


@pytest.mark.parametrize("name", ["functions", "n"])
def test_unsupported_features_say_so(name):
    value = 2 if name == "n" else [{"type": "function"}]
    error = error_of(parse_chat, chat(**{name: value}))
    assert "supported" in error.message and error.code in ("unsupported_parameter", "unsupported_value")


COMPLETION_422 = [
    ({"prompt": None}, "prompt"), ({"prompt": 5}, "prompt"), ({"prompt": {"text": "a"}}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"), ({"prompt": ["a", 1]}, "prompt"), ({"prompt": [1.5]}, "prompt"),
    ({"prompt": [True]}, "prompt"), ({"prompt": [["a"]]}, "prompt"), ({"model": None}, "model"),
    ({"echo": "yes"}, "echo"), ({"logprobs": True}, "logprobs"), ({"logprobs": "3"}, "logprobs"),
    ({"best_of": "1"}, "best_of"), ({"max_tokens": "ten"}, "max_tokens"), ({"temperature": "hot"}, "temperature"),
]


@pytest.mark.parametrize("fields, param", COMPLETION_422)
def test_completion_missing_or_wrong_type_is_422(fields, param):
    error = error_of(parse_completion, completion(**fields))
    assert (error.status, error.param) == (422, param)
    assert_openai_shape(error)


@pytest.mark.parametrize("missing", ["model", "prompt"])
def test_completion_missing_required_field_is_422(missing):
    body = completion()
    del body[missing]
    error = error_of(parse_completion, body)
    assert (error.status, error.param) == (422, missing) and missing in error.message


COMPLETION_400 = [
    ({"prompt": ""}, "prompt"), ({"prompt": []}, "prompt"), ({"prompt": [""]}, "prompt"), ({"prompt": [[]]}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [[1], [2]]}, "prompt"), ({"prompt": [3, -1]}, "prompt"),
    ({"logprobs": 6}, "logprobs"), ({"logprobs": -1}, "logprobs"), ({"best_of": 2}, "best_of"), ({"n": 3}, "n"),
    ({"max_tokens": 0}, "max_tokens"), ({"temperature": 2.5}, "temperature"),
    ({"stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "once \ud800"}, "prompt"), ({"prompt": ["\ud83d"]}, "prompt"), ({"suffix": "the end"}, "suffix"),
]


@pytest.mark.parametrize("fields, param", COMPLETION_400)
def test_completion_invalid_value_is_400(fields, param):
    error = error_of(parse_completion, completion(**fields))
    assert (error.status, error.param) == (400, param)
    assert_openai_shape(error)


def test_lone_surrogate_message_is_ascii_safe():
    error = error_of(parse_chat, chat(messages=[{"role": "user", "content": "\ud800"}]))
    assert "surrogate" in error.message and "messages[0].content" in error.message
    error.message.encode("utf-8")  # the message itself quotes nothing that cannot be sent
    assert "suffix" in error_of(parse_completion, completion(suffix="x")).message


def test_several_prompts_are_refused_by_name():
    assert "only one prompt per request" in error_of(parse_completion, completion(prompt=["a", "b"])).message.lower()


def test_config_error_from_sampling_params_is_400_with_its_message(monkeypatch):
    def refuse(**_):
        raise ConfigError("top_p must be in (0, 1], got 0")
    monkeypatch.setattr(protocol, "SamplingParams", refuse)
    error = error_of(parse_chat, chat())
    assert (error.status, error.message) == (400, "top_p must be in (0, 1], got 0")
    assert_openai_shape(error)


# --- error helpers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("error, status, type_, param, code", [
    (unauthorized(), 401, "authentication_error", None, "invalid_api_key"),
    (model_not_found("gpt-9"), 404, "invalid_request_error", "model", "model_not_found"),
    (too_large(1024), 413, "invalid_request_error", None, None),
    (overloaded(), 429, "rate_limit_error", None, None),
    (unavailable("the model is loading"), 503, "server_error", None, None),
    (malformed_json("Expecting value: line 1 column 1"), 400, "invalid_request_error", None, None),
    (protocol.too_deep(), 400, "invalid_request_error", None, None),
])
def test_error_helpers(error, status, type_, param, code):
    assert (error.status, error.type, error.param, error.code) == (status, type_, param, code)
    assert isinstance(error, Exception) and str(error) == error.message
    assert_openai_shape(error)


def test_error_helper_messages_carry_their_detail():
    assert "gpt-9" in model_not_found("gpt-9").message and "1024" in too_large(1024).message
    assert "loading" in unavailable("the model is loading").message
    assert "Expecting value" in malformed_json("Expecting value").message
    assert "API key" in unauthorized().message and "retry" in overloaded().message


def test_body_is_openai_shape():
    assert APIError(400, "bad", param="x", code="c").body() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": "c"}}
