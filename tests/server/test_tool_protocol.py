"""Tool fields of a chat request: tools, tool_choice, parallel_tool_calls, assistant tool_calls, tool results and
template variables, read or refused with OpenAI-shaped errors."""

from __future__ import annotations

import pytest

from moestream.server.protocol import APIError, parse_chat

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def chat(**fields) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def error_of(body: dict) -> APIError:
    with pytest.raises(APIError) as err:
        parse_chat(body)
    return err.value


def test_tools_and_choices_are_read():
    r = parse_chat(chat(tools=[WEATHER, TIME]))
    assert (r.tools.choice, r.tools.name, r.tools.parallel) == ("auto", None, True)
    assert [t["function"]["name"] for t in r.tools.tools] == ["get_weather", "get_time"]
    assert r.tools.schema_of("get_weather")["required"] == ["city"] and r.tools.schema_of("get_time") == {}
    named = parse_chat(chat(tools=[WEATHER, TIME], parallel_tool_calls=False,
                            tool_choice={"type": "function", "function": {"name": "get_time"}})).tools
    assert (named.choice, named.name, named.parallel, named.forced) == ("named", "get_time", False, True)
    assert parse_chat(chat(tools=[WEATHER], tool_choice="required")).tools.forced
    assert parse_chat(chat(tools=[WEATHER], tool_choice="none")).tools.choice == "none"


def test_no_tools_means_none():
    assert parse_chat(chat()).tools is None
    assert parse_chat(chat(tools=[], tool_choice="auto")).tools is None


def test_a_conversation_with_a_call_and_its_result_is_read_for_the_template():
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"}]
    r = parse_chat(chat(messages=messages, tools=[WEATHER]))
    assistant, result = r.messages[1], r.messages[2]
    assert assistant["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert assistant["content"] == ""
    assert result == {"role": "tool", "content": "12 C, rain", "tool_call_id": "call_1", "name": "get_weather"}


def test_template_kwargs_and_reasoning_effort():
    r = parse_chat(chat(chat_template_kwargs={"enable_thinking": False}, reasoning_effort="low"))
    assert r.template_kwargs == {"enable_thinking": False, "reasoning_effort": "low"}


@pytest.mark.parametrize("fields, param, says", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "'nope' is not among"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "is not one of"),
    ({"tool_choice": "required"}, "tool_choice", "gives no 'tools'"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "given twice"),
    ({"tools": [{"type": "function", "function": {"name": "a" * 65}}]}, "tools", "1 to 64"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools", "only 'function'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]}, "tools", "JSON schema"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages", "no call has the id"),
    ({"messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{x"}}]}]},
     "messages", "not JSON"),
    ({"reasoning_effort": "max"}, "reasoning_effort", "is not one of"),
    ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs", "set by the server"),
])
def test_bad_tool_fields_are_400_naming_the_problem(fields, param, says):
    err = error_of(chat(**fields))
    assert (err.status, err.param) == (400, param) and says in err.message, err.message


def test_missing_tool_call_id_is_422():
    err = error_of(chat(messages=[{"role": "tool", "content": "x"}]))
    assert (err.status, err.code) == (422, "missing_required_parameter") and "tool_call_id" in err.message


def test_calls_and_results_render_through_a_tool_aware_template():
    """With Qwen2.5's template (from llama.cpp's sdist) the request's tools, the assistant's call and the tool's
    result reach the prompt in the template's own markup."""
    from moestream.tokenizer.chat import ChatTemplate
    from tests.fixtures.llama_cpp import llama_cpp_dir

    source = (llama_cpp_dir() / "models/templates/Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"}]
    r = parse_chat(chat(messages=messages, tools=[WEATHER]))
    text = ChatTemplate(source).render(list(r.messages), tools=list(r.tools.tools))
    assert '"name": "get_weather"' in text and "<tools>" in text  # the tool list
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<tool_response>\n12 C, rain\n</tool_response>" in text
