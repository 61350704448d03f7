"""Hostile input against a real server: every malformed request is a 4xx with OpenAI-style JSON and leaves the
server serving as before; a client that leaves a whole (non-streamed) reply stops its generation; a 4 MiB prompt
is tokenized off the event loop; every 5xx is counted; `logit_bias` steers sampling; control-token text in a
message or a prompt string is plain text."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from moestream.assets import DEFAULT_MODEL
from moestream.server.app import ServerApp
from moestream.server.metrics import THROUGHPUT_WINDOW_S, Metrics
from moestream.tokenizer import ChatTemplate, Tokenizer, encode_chat
from tests.server.conftest import API_KEY
from tests.server.test_api import MODEL, PROMPT, post

USER = [{"role": "user", "content": "Where is Mr. Darcy?"}]


def samples(server) -> list:
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def value(server, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    return sum(s.value for s in samples(server) if s.name == name and labels.items() <= s.labels.items())


def wait_for(condition, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def greedy(client) -> tuple[str, str]:
    chat = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=16, temperature=0)
    text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0)
    return chat.choices[0].message.content, text.choices[0].text


def raw_json(**fields) -> bytes:
    # json.dumps writes a lone surrogate as the escape '\ud800': the JSON text a hostile client sends
    return json.dumps({"model": MODEL, **fields}).encode()


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


BAD = [  # (path, body, status, param)
    ("/v1/chat/completions", b"[" * 100_000, 400, None),
    ("/v1/completions", b'{"a":' * 100_000, 400, None),
    ("/v1/chat/completions", b"", 400, None),
    ("/v1/completions", b"\xff\xfe\xfa", 400, None),
    ("/v1/chat/completions", raw_json(messages=[{"role": "user", "content": "hi \ud800"}]), 400, "messages"),
    ("/v1/chat/completions", raw_json(messages=[{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]),
     400, "messages"),
    ("/v1/completions", raw_json(prompt="It was \ud800"), 400, "prompt"),
    ("/v1/completions", raw_json(prompt=PROMPT, stop=["\udc00"]), 400, "stop"),
    ("/v1/chat/completions", raw_json(model="\ud800", messages=USER), 400, "model"),
    ("/v1/chat/completions", raw_json(messages=[{"role": "user", "content": nested(900)}]), 422, "messages"),
    ("/v1/completions", raw_json(prompt=PROMPT, logit_bias={"abc": 1}), 400, "logit_bias"),
    ("/v1/completions", raw_json(prompt=PROMPT, logit_bias={"5": 101}), 400, "logit_bias"),
    ("/v1/completions", raw_json(prompt=PROMPT, logit_bias={"5": "1"}), 422, "logit_bias"),
    ("/v1/completions", raw_json(prompt=PROMPT, logit_bias={"4096": 1}), 400, "logit_bias"),  # vocabulary: 4096
    ("/v1/completions", raw_json(prompt=PROMPT, suffix="The end."), 400, "suffix"),
    ("/v1/chat/completions", raw_json(messages=USER, n=2), 400, "n"),
    ("/v1/completions", raw_json(prompt=""), 400, "prompt"),  # the embedded model adds no BOS: nothing to continue
]


def test_bad_requests_are_4xx_and_leave_the_server_as_it_was(server, client):
    before = greedy(client)
    errors_before = value(server, "moestream_requests_total", status="500")
    for path, body, status, param in BAD:
        code, err = post(server, path, body)
        assert code == status, (body[:80], err)
        assert set(err["error"]) == {"message", "type", "param", "code"} and err["error"]["message"], err
        assert err["error"]["param"] == param, err
    for call in (lambda: client.completions.create(model=MODEL, prompt=PROMPT, suffix="x"),
                 lambda: client.completions.create(model=MODEL, prompt=PROMPT, logit_bias={"99999": 5}),
                 lambda: client.chat.completions.create(model=MODEL, messages=USER, logit_bias={"1": -300})):
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        assert caught.value.param in ("suffix", "logit_bias") and caught.value.type == "invalid_request_error"
    assert greedy(client) == before
    assert value(server, "moestream_requests_total", status="500") == errors_before == 0
    assert value(server, "moestream_requests_total", endpoint="/v1/completions", status="400") >= 9


def test_logit_bias_bans_and_forces_tokens(client):
    tok = Tokenizer.from_gguf(DEFAULT_MODEL)
    first = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0).choices[0].text
    [first_id] = tok.encode(first)
    banned = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0,
                                       logit_bias={str(first_id): -100}).choices[0].text
    assert banned != first
    [the] = tok.encode(" the")
    forced = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0,
                                       logit_bias={str(the): 100}).choices[0].text
    assert forced == " the the the"


def test_control_token_text_in_requests_is_plain_text(client):
    tok, template = Tokenizer.from_gguf(DEFAULT_MODEL), ChatTemplate.from_gguf(DEFAULT_MODEL)
    text = "It was <|endoftext|> a fine morning"  # <|endoftext|> is this vocabulary's control token 0
    messages = [{"role": "user", "content": text}]
    chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0)
    assert chat.usage.prompt_tokens == len(encode_chat(tok, template, messages))
    assert chat.usage.prompt_tokens > len(tok.encode(template.render(messages)))  # not the one control token
    completion = client.completions.create(model=MODEL, prompt=text, max_tokens=1, temperature=0)
    assert completion.usage.prompt_tokens == len(tok.encode(text, parse_special=False)) > len(tok.encode(text))
    by_ids = client.completions.create(model=MODEL, prompt=tok.encode(text), max_tokens=1, temperature=0)
    assert by_ids.usage.prompt_tokens == len(tok.encode(text))  # token ids are how to send control tokens


def test_leaving_a_whole_reply_stops_its_generation(server):
    generated = value(server, "moestream_generated_tokens_total")
    gone = value(server, "moestream_requests_total", endpoint="/v1/completions", status="499")
    body = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 240, "temperature": 0}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    wait_for(lambda: value(server, "moestream_generated_tokens_total") > generated, "generation started")
    sock.close()  # the client gives up on the whole reply
    wait_for(lambda: value(server, "moestream_requests_total", endpoint="/v1/completions", status="499") > gone,
             "the request was counted as a client that left")
    wait_for(lambda: value(server, "moestream_running_sequences") == 0, "the slot was freed")
    assert value(server, "moestream_generated_tokens_total") - generated < 240


def test_health_is_answered_while_a_4mib_prompt_is_tokenized(server):
    rng = random.Random(13)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(50_000)]
    prompt = " ".join(rng.choices(words, k=700_000))[: (4 << 20) - 4096]
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 1}).encode()
    seen = []  # /health statuses answered while the prompt was being tokenized

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        big = pool.submit(post, server, "/v1/completions", body)
        while not big.done() and not seen:
            if value(server, "moestream_preparing_requests") >= 1:
                with urllib.request.urlopen(server.url + "/health", timeout=30) as r:
                    status = r.status
                if value(server, "moestream_preparing_requests") >= 1:  # still the same preparation
                    seen.append(status)
        code, err = big.result()
    assert seen == [200]
    assert (code, err["error"]["code"], err["error"]["param"]) == (400, "context_length_exceeded", "prompt")


def test_every_5xx_is_counted():
    async def boom(request):
        raise RuntimeError("a bug")

    metrics = Metrics()
    app = ServerApp(Starlette(routes=[Route("/boom", boom)]), worker=None, metrics=metrics)
    with _uvicorn(app) as url:
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(url + "/boom", timeout=30)
            assert caught.value.code == 500
    assert metrics.registry.get_sample_value("moestream_requests_total", {"endpoint": "other", "status": "500"}) == 2


class _uvicorn:
    """A uvicorn server for `app` on a free loopback port, on a thread, for the `with` block."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])))

    def __enter__(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started, "uvicorn started")
        return "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()


def test_throughput_window_stays_bounded_without_a_scrape():
    metrics = Metrics()
    for _ in range(50_000):
        metrics.on_token()
    assert len(metrics._recent) <= THROUGHPUT_WINDOW_S + 1  # one entry per second, old seconds dropped
    assert metrics.registry.get_sample_value("moestream_generated_tokens_total") == 50_000
