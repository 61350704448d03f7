"""SIGTERM against a real `moestream serve`: during the grace period new requests get 503 (the listener stays
open) and running ones finish; at its end a stream still running gets a last chunk carrying an error object,
then `data: [DONE]`; the process exits 0."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import urllib.error
import urllib.request

import openai
import pytest

from tests.server.conftest import start_server
from tests.server.test_api import MODEL, PROMPT
from tests.server.test_hostile import value, wait_for


def host_port(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def health(server) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.url + "/health", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_stream_cut_off_at_the_end_of_the_grace_gets_an_error_then_done():
    server = start_server("--shutdown-grace", "0")
    conn = http.client.HTTPConnection(*host_port(server), timeout=60)
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 240, "temperature": 0, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: {")
    server.proc.send_signal(signal.SIGTERM)
    lines = iter(response.readline, b"")
    events = [line.removeprefix(b"data: ").strip() for line in lines if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "shutting down" in error["message"]
    assert all("error" not in json.loads(e) for e in events[:-2])  # text chunks up to the cut
    assert server.proc.wait(timeout=60) == 0


def test_new_requests_get_503_while_running_ones_finish():
    server = start_server("--shutdown-grace", "120")
    body = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}).encode()
    held = socket.create_connection(host_port(server))  # a request in flight: its body is half sent
    held.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
    wait_for(lambda: value(server, "moestream_http_requests_in_flight") >= 2, "the held request is in flight")
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: health(server) == (503, {"status": "closing"}), "/health says closing")

    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert caught.value.status_code == 503 and caught.value.type == "server_error"
    assert "shutting down" in caught.value.message
    assert value(server, "moestream_requests_total", endpoint="/v1/chat/completions", status="503") == 1

    held.sendall(body[10:])  # the request that began before SIGTERM may still finish
    reply = held.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 200") and '"finish_reason":"length"' in reply.replace(" ", "")
    held.close()
    assert server.proc.wait(timeout=60) == 0
