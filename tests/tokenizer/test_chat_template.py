"""Chat templates render exactly as HF transformers renders them (`render_jinja_template`, the function behind
`apply_chat_template(tokenize=False)`), the ChatML fallback is used when a GGUF has no template, and template
failures surface as TokenizerError."""

from __future__ import annotations

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from moestream.errors import TokenizerError
from moestream.tokenizer import ChatTemplate
from tests.fixtures.llama_cpp import llama_cpp_dir, vocab_file

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi <b>there</b> & 'you'"},  # HTML-ish text must not be escaped
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]

# Ends with the assistant turn, whose reasoning templates like Qwen3 and gpt-oss render. It is given as
# `thinking`; Qwen3 reads `reasoning_content`, so this also checks that the names are aliased like transformers.
WITH_REASONING = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4", "thinking": "Add two and two."},
]

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]

TEMPLATES = [
    "Qwen-Qwen3-0.6B.jinja",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
    "deepseek-ai-DeepSeek-V3.1.jinja",
    "meta-llama-Llama-3.1-8B-Instruct.jinja",  # strftime_now
    "openai-gpt-oss-120b.jinja",  # strftime_now, reads `thinking`
    "microsoft-Phi-3.5-mini-instruct.jinja",
]


def template_source(name: str) -> str:
    return (llama_cpp_dir() / "models" / "templates" / name).read_text(encoding="utf-8")


def reference(source: str, messages, **kwargs) -> str:
    rendered, _ = render_jinja_template([messages], chat_template=source, **kwargs)
    return rendered[0]


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize(("messages", "add_generation_prompt"), [(CONVERSATION, True), (WITH_REASONING, False)],
                         ids=["plain", "reasoning"])
def test_matches_transformers(name, messages, add_generation_prompt):
    source = template_source(name)
    ours = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(
        messages, add_generation_prompt=add_generation_prompt
    )
    theirs = reference(source, messages, add_generation_prompt=add_generation_prompt, bos_token="<s>",
                       eos_token="</s>")
    assert ours == theirs


@pytest.mark.parametrize("name", ["Qwen-Qwen3-0.6B.jinja", "openai-gpt-oss-120b.jinja"])
def test_reasoning_is_rendered(name):
    prompt = ChatTemplate(template_source(name)).render(WITH_REASONING, add_generation_prompt=False)
    assert "Add two and two." in prompt


@pytest.mark.parametrize("name", ["Qwen-Qwen3-0.6B.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja"])
def test_tools_and_extra_variables_match_transformers(name):
    source = template_source(name)
    kwargs = {"add_generation_prompt": False, "tools": TOOLS, "enable_thinking": False}
    ours = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(CONVERSATION, **kwargs)
    theirs = reference(source, CONVERSATION, bos_token="<s>", eos_token="</s>", **kwargs)
    assert ours == theirs
    assert "get_weather" in ours


def test_generation_block_renders_its_body():
    source = "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
    assert ChatTemplate(source).render(CONVERSATION[:2]) == reference(source, CONVERSATION[:2])


def test_from_gguf_reads_template_and_special_texts():
    template = ChatTemplate.from_gguf(vocab_file("qwen2"))
    assert not template.is_default
    assert template.eos_token == "<|endoftext|>"
    prompt = template.render([{"role": "user", "content": "Hi"}])
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_fallback_is_chatml_when_gguf_has_no_template():
    template = ChatTemplate.from_gguf(vocab_file("llama-spm"))
    assert template.is_default
    assert template.bos_token == "<s>"
    prompt = template.render(CONVERSATION[:2], add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi <b>there</b> & 'you'<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert not template.render(CONVERSATION[:2], add_generation_prompt=False).endswith("assistant\n")


def test_raise_exception_becomes_tokenizer_error():
    template = ChatTemplate(template_source("google-gemma-2-2b-it.jinja"))
    with pytest.raises(TokenizerError, match="System role not supported"):
        template.render(CONVERSATION)


def test_syntax_error_becomes_tokenizer_error():
    with pytest.raises(TokenizerError, match="does not compile"):
        ChatTemplate("{% for m in messages %}{{ m.content }")


def test_sandbox_violation_becomes_tokenizer_error():
    template = ChatTemplate("{{ messages.append({'role': 'user'}) }}")
    with pytest.raises(TokenizerError, match="SecurityError"):
        template.render(CONVERSATION)


def test_missing_named_template_is_an_error():
    with pytest.raises(TokenizerError, match="tool_use"):
        ChatTemplate.from_gguf(vocab_file("qwen2"), name="tool_use")


@pytest.mark.parametrize("source", ["{{ ((10 ** 1000) ** 1000) ** 1000 }}", "{{ 2 ** 100000 }}",
                                    "{{ 'x' * 10 ** 12 }}", "{{ [0] * 10 ** 9 }}"])
def test_hostile_arithmetic_in_a_template_is_refused_not_run(source):
    # a GGUF's template could otherwise hang the process computing a huge power, or fill memory
    with pytest.raises(TokenizerError, match="too"):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])


def test_ordinary_arithmetic_still_renders():
    out = ChatTemplate("{{ 2 ** 10 }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ 1.5 ** 2 }}").render([])
    assert out == "1024 ababab [1, 1] 2.25"
