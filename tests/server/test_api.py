"""The OpenAI-compatible server, driven by the official `openai` client against a real server process."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import API_KEY, start_server

MODEL = "tiny-mixtral-novels"
PROMPT = "It was a fine morning, and Elizabeth"
PROMPTS = [f"{who} {what}" for who in ("Emma", "Mr. Darcy", "Jo", "Poirot") for what in
           ("said that", "walked into the room and", "was not", "had never seen")]


def greedy_completion(client, prompt: str, n: int = 24) -> str:
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=n, temperature=0)
    return r.choices[0].text


def post(server, path: str, body: bytes, key: str | None = API_KEY, headers: dict | None = None):
    """Raw POST -> (status, parsed JSON body)."""
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(server.url + path, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metrics(server) -> dict[str, float]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def test_models_lists_the_served_file(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL
    assert card.context_length == 256  # the embedded model's own
    assert card.capabilities == {"tools": True, "tool_format": "hermes (system prompt)", "reasoning": False,
                                 "structured_output": True}


def test_greedy_completion_equals_moestream_generate(client):
    cli = subprocess.run([sys.executable, "-m", "moestream", "generate", "-p", PROMPT, "-n", "24", "--temp", "0",
                          "--no-echo"], capture_output=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0)
    assert r.choices[0].text == cli.stdout.decode().removesuffix("\n")  # generate ends its output with a newline
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 24 and r.usage.prompt_tokens > 0


def test_chat_whole_and_streamed_agree(client):
    messages = [{"role": "user", "content": "Where is Mr. Darcy?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_stream_equals_whole(client):
    expected = greedy_completion(client, PROMPT, 16)
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream) == expected


def test_sixteen_concurrent_streams_equal_their_sequential_results(client, server):
    sequential = {p: greedy_completion(client, p, 24) for p in PROMPTS}
    before = metrics(server)

    def streamed(prompt: str) -> str:
        s = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stream=True)
        return "".join(c.choices[0].text for c in s)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = dict(zip(PROMPTS, pool.map(streamed, PROMPTS)))
    assert together == sequential
    after = metrics(server)
    assert after["moestream_step_latency_seconds_count"] - before["moestream_step_latency_seconds_count"] < 16 * 24


def test_sampling_is_reproducible_with_a_seed(client):
    kwargs = dict(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=1.0, seed=42)
    a, b = (client.completions.create(**kwargs).choices[0].text for _ in range(2))
    assert a == b


def test_stop_sequence_ends_the_text(client):
    full = greedy_completion(client, PROMPT, 60)
    stop = next(ch for ch in (",", ".", " the ", " ") if ch in full)
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=60, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(stop)]


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Emma"}], max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
    c = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert "".join(lp.tokens) == c.choices[0].text and all(len(t) == 2 for t in lp.top_logprobs)


def test_disconnect_mid_stream_frees_the_slot(server):
    body = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 230, "temperature": 0, "stream": True})
    before = metrics(server)["moestream_generated_tokens_total"]
    req = urllib.request.Request(server.url + "/v1/completions", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
    resp = urllib.request.urlopen(req, timeout=60)
    assert resp.readline().startswith(b"data: ")
    resp.close()  # the client goes away after the first chunk
    deadline = time.monotonic() + 10
    while metrics(server)["moestream_running_sequences"] and time.monotonic() < deadline:
        time.sleep(0.05)
    m = metrics(server)
    assert m["moestream_running_sequences"] == 0
    assert m["moestream_generated_tokens_total"] - before < 230  # stopped early rather than running to the end


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": "ten"}).encode(), 422, "max_tokens"),
    (json.dumps({"model": MODEL, "prompt": 5}).encode(), 422, "prompt"),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": -3}).encode(), 400, "max_tokens"),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "temperature": 7}).encode(), 400, "temperature"),
    (json.dumps({"model": "gpt-4o", "prompt": PROMPT}).encode(), 404, "model"),
    (json.dumps({"model": MODEL, "prompt": "word " * 400}).encode(), 400, "prompt"),
])
def test_bad_completion_requests(server, body, status, param):
    code, err = post(server, "/v1/completions", body)
    assert code == status, err
    assert set(err["error"]) >= {"message", "type", "param", "code"} and err["error"]["message"]
    if param:
        assert err["error"]["param"] == param


def test_api_key_is_required(server):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    for key in (None, "wrong-key"):
        code, err = post(server, "/v1/chat/completions", body, key=key)
        assert code == 401 and err["error"]["type"] == "authentication_error"
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server.base_url, api_key="nope", max_retries=0).models.list()


def test_oversized_body_and_unknown_route(server):
    code, err = post(server, "/v1/completions", b'{"prompt": "' + b"a" * (5 << 20) + b'"}')
    assert code == 413 and "error" in err
    code, err = post(server, "/v1/nothing-here", b"{}")
    assert code == 404 and err["error"]["type"] == "not_found_error"


def test_metrics_parse_and_count(server, client):
    greedy_completion(client, PROMPT, 4)
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        families = {f.name for f in text_string_to_metric_families(r.read().decode())}
    for name in ("moestream_requests", "moestream_generated_tokens", "moestream_prompt_tokens",
                 "moestream_tokens_per_second", "moestream_cache_hits", "moestream_cache_misses",
                 "moestream_cache_bytes_read", "moestream_expert_read_latency_seconds",
                 "moestream_step_latency_seconds", "moestream_queue_depth", "moestream_running_sequences"):
        assert name in families, name
    m = metrics(server)
    assert m["moestream_generated_tokens_total"] > 0 and m["moestream_cache_lookups_total"] > 0


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly():
    server = start_server()
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=200, temperature=0, stream=True)
    first = next(iter(stream))
    server.proc.send_signal(subprocess.signal.SIGTERM)
    rest = list(stream)  # the running request is allowed to finish within the grace period
    assert first.choices[0].text is not None
    assert rest and rest[-1].choices[0].finish_reason in ("length", "stop")
    assert server.proc.wait(timeout=30) == 0


def test_a_taken_port_is_a_clear_error():
    import socket

    from moestream.assets import DEFAULT_MODEL
    from tests.cli.test_bad_input import assert_one_line_error, run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_one_line_error(run_cli("serve", "-m", str(DEFAULT_MODEL), "--port", str(port)), "cannot listen",
                              str(port))
