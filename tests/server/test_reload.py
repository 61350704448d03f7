"""`moestream serve --config FILE` and SIGHUP, on a real server under load: four streams running through a reload
that changes the temperature default, the API key and the cache budget all complete; the next request samples
with the new default, the old key is refused; a model switch under load loses no request; a broken file keeps
the server on the settings it had."""

from __future__ import annotations

import shutil
import signal
import threading
import time
import urllib.request

import pytest
from openai import OpenAI, AuthenticationError

from moestream.assets import default_model_path
from tests.server.conftest import start_server
from tests.server.test_api import PROMPT

EOS = 0  # the embedded model's end-of-sequence id, kept out of the streams so that they run their length
STREAM_TOKENS = 200


def write_config(path, **settings) -> None:
    lines = [f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false")
             for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


def client(server, key: str) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def reload(server, says: str, timeout: float = 60) -> None:
    """SIGHUP, then wait for the log line that says the reload (or its refusal, or a switch) happened."""
    seen = len(server.output)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(server, says, seen, timeout)


def wait_for(server, says: str, seen: int, timeout: float = 60) -> None:
    """Wait for a log line with `says` among those after the first `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(says in line for line in server.output[seen:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {says!r} in the log after SIGHUP: {''.join(server.output[seen:])}")


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


class Streams:
    """n streaming completions in threads, each told to run STREAM_TOKENS tokens; `started` once each has its
    first chunk, so a reload is sent while all of them run."""

    def __init__(self, api: OpenAI, model: str, n: int = 4):
        self.api, self.model, self.texts, self.errors = api, model, [None] * n, []
        self._first = threading.Barrier(n + 1, timeout=120)
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]
        self.ended_at: list[float] = [0.0] * n
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        try:
            stream = self.api.completions.create(model=self.model, prompt=PROMPT, max_tokens=STREAM_TOKENS,
                                                 stream=True, seed=i, logit_bias={str(EOS): -100})
            parts, finish = [], None
            for n, chunk in enumerate(stream):
                if n == 0:
                    self._first.wait()
                parts.append(chunk.choices[0].text)
                finish = chunk.choices[0].finish_reason or finish
            self.texts[i], self.ended_at[i] = ("".join(parts), finish), time.monotonic()
        except Exception as exc:  # reported by join()
            self.errors.append(exc)
            self._first.abort()

    def started(self) -> None:
        self._first.wait()

    def join(self) -> list:
        for t in self.threads:
            t.join(timeout=300)
        assert not self.errors, self.errors
        return self.texts


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "serve.toml"
    write_config(path, temp=1.0, **{"api-key": "old-key", "max-batch": 2, "log-requests": False})
    return path


def test_reload_under_load_changes_sampling_key_and_budget(config):
    server = start_server("--config", str(config))
    try:
        model = client(server, "old-key").models.list().data[0].id
        budget = metric(server, "moestream_cache_budget_bytes")
        streams = Streams(client(server, "old-key"), model)
        streams.started()
        write_config(config, temp=0.0, **{"api-key": "new-key", "max-batch": 2, "log-requests": False,
                                          "ram-budget": f"{int(budget // 2)}"})
        reload(server, "reloaded")
        reloaded_at = time.monotonic()
        texts = streams.join()
        assert all(finish == "length" for _, finish in texts), texts  # every stream ran its whole length
        assert max(streams.ended_at) > reloaded_at  # ... and at least one was still running at the reload
        with pytest.raises(AuthenticationError):
            client(server, "old-key").models.list()
        new = client(server, "new-key")
        # temperature 0 is the default now: requests that set none (with different seeds) are greedy
        a, b = (new.completions.create(model=model, prompt=PROMPT, max_tokens=12, seed=s).choices[0].text
                for s in (1, 2))
        assert a == b == new.completions.create(model=model, prompt=PROMPT, max_tokens=12,
                                                temperature=0).choices[0].text
        assert metric(server, "moestream_cache_budget_bytes") == budget // 2
        assert metric(server, "moestream_cache_bytes") <= budget // 2  # shrinking evicted down to it
    finally:
        assert server.stop() == 0


def test_model_switch_under_load_loses_no_request(config, tmp_path):
    other = tmp_path / "switched-model.gguf"
    shutil.copyfile(default_model_path(), other)
    server = start_server("--config", str(config))
    try:
        api = client(server, "old-key")
        model = api.models.list().data[0].id
        streams = Streams(api, model)
        streams.started()
        write_config(config, model=str(other), temp=1.0, **{"api-key": "old-key", "max-batch": 2,
                                                           "log-requests": False})
        seen = len(server.output)
        server.proc.send_signal(signal.SIGHUP)
        during = [api.completions.create(model=model, prompt=PROMPT, max_tokens=4).choices[0].finish_reason
                  for _ in range(3)]  # sent while the new model loads and the switch waits: none may fail
        texts = streams.join()
        assert all(finish == "length" for _, finish in texts) and all(during), (texts, during)
        wait_for(server, "now serving switched-model.gguf", seen)
        assert api.models.list().data[0].id == "switched-model"
        assert api.completions.create(model="switched-model", prompt=PROMPT, max_tokens=4).choices[0].text
    finally:
        assert server.stop() == 0


def test_a_broken_config_keeps_the_running_settings(config):
    server = start_server("--config", str(config))
    try:
        api = client(server, "old-key")
        config.write_text("temp = [unclosed\n")
        reload(server, "reload refused")
        config.write_text('ram-budget = "1KiB"\napi-key = "old-key"\n')  # valid TOML, a budget the cache refuses
        reload(server, "reload refused")
        config.write_text('tmep = 0.5\napi-key = "old-key"\n')
        reload(server, "unknown key 'tmep'")
        assert api.completions.create(model=api.models.list().data[0].id, prompt=PROMPT, max_tokens=3).choices
        assert server.proc.poll() is None
    finally:
        assert server.stop() == 0
    refused = [line for line in server.output if "reload refused" in line]
    assert len(refused) == 3 and all(line.startswith("moestream: ") and "Traceback" not in line for line in refused)
