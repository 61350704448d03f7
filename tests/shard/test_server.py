"""A server whose experts are sharded over 2 or 3 ranks answers 8 concurrent streams with exactly the tokens and
log-probabilities of a one-process server (greedy, so the batch composition cannot change the choice), shows
per-rank counters in /metrics; killing the expert rank mid-request ends that request with an error within the
timeout, and /health then answers 503 naming the rank while the server stays up. A small DeepSeek-shaped synth
file served by 2 ranks gives one process's completions too."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from moestream.assets import default_model_path
from tests.server.conftest import Server, _healthy, start_server
from tests.shard.ranks import finish, start_ranks

MODEL = str(default_model_path())
MODEL_ID = default_model_path().stem  # the served model id
PROMPTS = [f"Chapter {i}. It was a fine morning, and" for i in range(8)]
TIMEOUT = 8  # --shard-timeout


def start_sharded(n: int, *extra: str, model: str = MODEL) -> tuple[Server, list[subprocess.Popen]]:
    flags = ["serve", "-m", model, "--port", "0", "--max-batch", "8", "--shard", "experts", "--shard-timeout",
             str(TIMEOUT), *extra]
    procs = start_ranks(n, lambda r: ["-m", "moestream", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Server(procs[0])
    threading.Thread(target=lambda: server.output.extend(procs[0].stdout), daemon=True).start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (server.url and _healthy(server.url)):
        found = [m for line in list(server.output) if (m := re.search(r"on (http://[^/\s]+)/v1", line))]
        server.url = found[0].group(1) if found else ""
        assert procs[0].poll() is None, "".join(server.output)
        time.sleep(0.1)
    assert server.url and _healthy(server.url), "".join(server.output)
    return server, procs


def client_of(server: Server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=60)


def stream(client, prompt: str, n: int = 24) -> tuple[list[str], list[float]]:
    tokens, logprobs = [], []
    for chunk in client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=n, temperature=0, stream=True, logprobs=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            for lp in chunk.choices[0].logprobs.content:
                tokens.append(lp.token)
                logprobs.append(lp.logprob)
    return tokens, logprobs


def eight_streams(server: Server):
    client = client_of(server)
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda p: stream(client, p), PROMPTS))


@pytest.fixture(scope="module")
def reference():
    server = start_server("-m", MODEL, "--max-batch", "8")
    try:
        return eight_streams(server)
    finally:
        server.stop()


@pytest.mark.parametrize("n, extra", [(2, ()), (3, ("--prefetch",))], ids=["2", "3-prefetch"])
def test_eight_streams_match_one_process_then_a_killed_rank_fails_cleanly(reference, n, extra):
    server, procs = start_sharded(n, *extra)  # prefetch hints in flight too when the rank dies (3 ranks)
    try:
        got = eight_streams(server)
        assert got == reference  # tokens and float log-probabilities, exactly
        assert all(len(tokens) == 24 for tokens, _ in got)
        time.sleep(2.5)  # a heartbeat brings rank 1's counters every second
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
        assert re.search(r'moestream_shard_lookups_total\{rank="1"\} [1-9]', metrics), metrics[-2000:]
        assert 'moestream_shard_experts{rank="0"}' in metrics and "moestream_shard_network_seconds" in metrics

        client = client_of(server)
        errors: list[BaseException] = []
        started = threading.Event()

        def long_request():
            try:
                for chunk in client.chat.completions.create(
                        model=MODEL_ID, messages=[{"role": "user", "content": "A long tale:"}], max_tokens=4000,
                        temperature=0, stream=True, extra_body={"ignore_eos": True}):
                    started.set()
            except Exception as exc:  # the expected end: an error event or a broken stream
                errors.append(exc)

        t0 = time.monotonic()
        worker = threading.Thread(target=long_request)
        worker.start()
        assert started.wait(30)
        procs[1].kill()
        worker.join(timeout=TIMEOUT + 20)
        assert not worker.is_alive(), "the request hung after its expert rank died"
        assert time.monotonic() - t0 < TIMEOUT + 30
        assert errors and "expert rank 1" in str(errors[0]), errors
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(server.url + "/health", timeout=5)
        assert health.value.code == 503 and "expert rank 1" in health.value.read().decode()
        from openai import APIStatusError

        with pytest.raises(APIStatusError) as later:
            client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert later.value.status_code == 503 and "expert rank 1" in str(later.value)
        assert procs[0].poll() is None  # the server is still up, saying why it cannot answer
    finally:
        server.stop()
        finish(procs, timeout=30)


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory) -> str:
    """A small DeepSeek-shaped synth file (dense first layer, shared expert, grouped routing), no chat template:
    served through /v1/completions."""
    from moestream.synth import write_synth
    from tests.synth.test_synth import Q4_0, small

    path = tmp_path_factory.mktemp("shard-server") / "deepseek-synth.gguf"
    write_synth(path, small("deepseek-v3", vocab=2000), Q4_0, seed=3, progress=False)
    return str(path)


def completion_streams(server: Server, model_id: str) -> list[tuple[list[str], list[float]]]:
    client = client_of(server)

    def one(prompt: str):
        tokens, logprobs = [], []
        for chunk in client.completions.create(model=model_id, prompt=prompt, max_tokens=16, temperature=0,
                                               stream=True, logprobs=1):
            lp = chunk.choices[0].logprobs if chunk.choices else None
            if lp is not None and lp.tokens:
                tokens += lp.tokens
                logprobs += lp.token_logprobs
        return tokens, logprobs

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, [f"{i} {i + 1} {i + 2}" for i in range(8)]))


def test_a_synth_file_serves_eight_streams_like_one_process(synth_file):
    model_id = Path(synth_file).stem
    one = start_server("-m", synth_file, "--max-batch", "8")
    try:
        want = completion_streams(one, model_id)
    finally:
        one.stop()
    server, procs = start_sharded(2, model=synth_file)
    try:
        got = completion_streams(server, model_id)
        assert got == want  # tokens and float log-probabilities, exactly
        assert all(len(tokens) == 16 for tokens, _ in got), got
    finally:
        server.stop()
        finish(procs, timeout=30)
