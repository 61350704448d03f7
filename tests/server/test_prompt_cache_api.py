"""The prompt cache through the server: the second of two requests sharing a 1,000-token prefix reports at least
1,000 cached tokens (usage.prompt_tokens_details.cached_tokens, and Anthropic's cache_read_input_tokens) and
/metrics counts them; its output equals that of a server without the cache. A tiny model whose context was set
to 2048 tokens holds the long prompts."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.tiny_models import gguf_path
from tests.server.conftest import API_KEY, start_server

PREFIX = [(13 * i + 5) % 900 + 10 for i in range(1000)]


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    def edit(fields: dict) -> dict:
        value, vtype, sub = fields["qwen3moe.context_length"]
        return {**fields, "qwen3moe.context_length": (2048, vtype, sub)}
    return copy_gguf(gguf_path("qwen3moe"), tmp_path_factory.mktemp("long") / "tiny-long.gguf", edit_metadata=edit)


@pytest.fixture(scope="module")
def servers(long_model):
    cached = start_server("-m", str(long_model), "--api-key", API_KEY, "--prompt-cache", "256MiB")
    plain = start_server("-m", str(long_model), "--api-key", API_KEY)
    yield cached, plain
    cached.stop()
    plain.stop()


def _client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def _complete(server, prompt: list[int]):
    return _client(server).completions.create(model="tiny-long", prompt=prompt, max_tokens=16, temperature=0)


def test_shared_prefix_is_reported_cached_and_output_is_unchanged(servers):
    cached, plain = servers
    first = _complete(cached, PREFIX + [11, 12])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second = _complete(cached, PREFIX + [21, 22, 23])
    assert second.usage.prompt_tokens_details.cached_tokens >= 1000
    assert second.choices[0].text == _complete(plain, PREFIX + [21, 22, 23]).choices[0].text
    assert _complete(plain, PREFIX + [21, 22, 23]).usage.prompt_tokens_details.cached_tokens == 0


def test_chat_and_messages_report_cached_tokens(servers):
    cached, _ = servers
    history = [{"role": "system", "content": "You are a careful assistant. " * 60},
               {"role": "user", "content": "First question?"}]
    client = _client(cached)
    client.chat.completions.create(model="tiny-long", messages=history, max_tokens=4, temperature=0)
    again = client.chat.completions.create(model="tiny-long", messages=history + [
        {"role": "assistant", "content": "An answer."}, {"role": "user", "content": "And the next?"}],
        max_tokens=4, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 300  # the system prompt and first turn
    import anthropic
    claude = anthropic.Anthropic(base_url=cached.url, api_key=API_KEY, max_retries=0)
    r = claude.messages.create(model="tiny-long", max_tokens=4, system=history[0]["content"],
                               messages=[history[1]])
    assert r.usage.cache_read_input_tokens > 300
    assert r.usage.input_tokens + r.usage.cache_read_input_tokens == claude.messages.count_tokens(
        model="tiny-long", system=history[0]["content"], messages=[history[1]]).input_tokens


def test_metrics_count_the_cache(servers):
    cached, plain = servers
    _complete(cached, PREFIX[:300] + [5])
    _complete(cached, PREFIX[:300] + [6])
    with urllib.request.urlopen(cached.url + "/metrics", timeout=10) as r:
        values = {s.name: s.value for f in text_string_to_metric_families(r.read().decode()) for s in f.samples}
    assert values["moestream_prompt_cache_hit_tokens_total"] >= 300
    assert values["moestream_prompt_cache_bytes"] > 0 and values["moestream_prompt_cache_stored_blocks_total"] > 0
    with urllib.request.urlopen(plain.url + "/metrics", timeout=10) as r:
        plain_values = {s.name: s.value for f in text_string_to_metric_families(r.read().decode()) for s in f.samples}
    assert plain_values["moestream_prompt_cache_hit_tokens_total"] == 0


def test_prompt_cache_dir_survives_a_restart(long_model, tmp_path):
    flags = ("-m", str(long_model), "--api-key", API_KEY, "--prompt-cache", "64MiB", "--prompt-cache-dir",
             str(tmp_path))
    first = start_server(*flags)
    try:
        before = _complete(first, PREFIX + [31, 32])
    finally:
        assert first.stop() == 0  # a clean stop writes the queued blocks
    again = start_server(*flags)
    try:
        after = _complete(again, PREFIX + [31, 32])
    finally:
        again.stop()
    assert after.usage.prompt_tokens_details.cached_tokens >= 1000
    assert after.choices[0].text == before.choices[0].text
