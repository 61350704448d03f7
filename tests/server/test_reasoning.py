"""Reasoning through every API, on the embedded model's weights with DeepSeek-R1's chat template (from llama.cpp's
sdist), whose generation prompt opens `<think>`: the reply is reasoning until `</think>`, reported as
`reasoning_content` (chat), a reasoning item (responses) and a thinking block (messages), never as content.
Template variables: Qwen3's template with `enable_thinking: false` writes an empty think block into the prompt."""

from __future__ import annotations

import anthropic
import pytest

from moestream.assets import default_model_path
from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.llama_cpp import llama_cpp_dir
from tests.server.conftest import API_KEY, start_server

ASK = [{"role": "user", "content": "Why is the sky blue?"}]
THINK = {"chat_template_kwargs": {"enable_thinking": True}}  # llama.cpp's copy of the R1 template thinks on request


def _with_template(tmp_path_factory, name: str):
    source = (llama_cpp_dir() / "models/templates" / name).read_text()
    dst = tmp_path_factory.mktemp("reasoning") / "tiny-thinker.gguf"

    def edit(fields: dict) -> dict:
        value, vtype, sub = fields["tokenizer.chat_template"]
        return {**fields, "tokenizer.chat_template": (source, vtype, sub)}
    return copy_gguf(default_model_path(), dst, edit_metadata=edit)


@pytest.fixture(scope="module")
def thinker(tmp_path_factory):
    s = start_server("-m", str(_with_template(tmp_path_factory, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")),
                     "--api-key", API_KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def oai(thinker):
    from openai import OpenAI
    return OpenAI(base_url=thinker.base_url, api_key=API_KEY, max_retries=0, timeout=60)


def test_models_says_it_reasons(oai):
    assert oai.models.list().data[0].capabilities["reasoning"] is True


def test_chat_reasoning_content_whole_and_streamed(oai):
    plain = oai.chat.completions.create(model="tiny-thinker", messages=ASK, max_tokens=8, temperature=0)
    assert plain.choices[0].message.content and not getattr(plain.choices[0].message, "reasoning_content", None)
    r = oai.chat.completions.create(model="tiny-thinker", messages=ASK, max_tokens=24, temperature=0,
                                    extra_body=THINK)
    message = r.choices[0].message
    assert message.reasoning_content and not message.content  # cut off while still thinking
    streamed, content = [], []
    for part in oai.chat.completions.create(model="tiny-thinker", messages=ASK, max_tokens=24, temperature=0,
                                            stream=True, extra_body=THINK):
        if part.choices:
            streamed.append(getattr(part.choices[0].delta, "reasoning_content", None) or "")
            content.append(part.choices[0].delta.content or "")
    assert "".join(streamed) == message.reasoning_content and not "".join(content)


def test_responses_reasoning_item(oai):
    r = oai.responses.create(model="tiny-thinker", input="Why is the sky blue?", max_output_tokens=24,
                             temperature=0, extra_body=THINK)
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.content[0].text


def test_messages_thinking_block(thinker):
    claude = anthropic.Anthropic(base_url=thinker.url, api_key=API_KEY, max_retries=0)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    r = claude.messages.create(model="tiny-thinker", max_tokens=24, messages=ASK, thinking=thinking,
                               extra_body={"temperature": 0})
    assert r.content[0].type == "thinking" and r.content[0].thinking
    with claude.messages.stream(model="tiny-thinker", max_tokens=24, messages=ASK, thinking=thinking,
                                extra_body={"temperature": 0}) as stream:
        events = list(stream)
    thinking = "".join(e.delta.thinking for e in events if e.type == "content_block_delta"
                       and e.delta.type == "thinking_delta")
    assert thinking == r.content[0].thinking


def test_enable_thinking_reaches_the_template(tmp_path_factory):
    s = start_server("-m", str(_with_template(tmp_path_factory, "Qwen-Qwen3-0.6B.jinja")), "--api-key", API_KEY)
    try:
        from openai import OpenAI
        client = OpenAI(base_url=s.base_url, api_key=API_KEY, max_retries=0)

        def prompt_tokens(**extra) -> int:
            return client.chat.completions.create(model="tiny-thinker", messages=ASK, max_tokens=1,
                                                  extra_body=extra).usage.prompt_tokens
        on, off = prompt_tokens(), prompt_tokens(chat_template_kwargs={"enable_thinking": False})
        assert off > on  # the empty <think>\n\n</think> block the template writes when thinking is off
    finally:
        s.stop()
