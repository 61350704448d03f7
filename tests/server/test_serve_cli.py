"""`moestream serve` as a user starts it: a model that cannot load is a one-line error and a non-zero exit within
seconds (not a server answering 503 forever); the sampling flags set the defaults of requests that leave them
out (the CLI's own defaults otherwise, so a plain client request samples like `moestream generate`); every
request gets one log line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures.tiny_models import gguf_path
from tests.server.conftest import start_server
from tests.server.test_api import MODEL, PROMPT


def serve(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moestream", "serve", "--port", "0", *flags], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("flags, says", [
    (("-m", "/nonexistent/model.gguf"), "no such file"),
    (("--ram-budget", "1KiB"), "RAM budget"),
])
def test_a_model_that_cannot_load_exits_with_one_line(flags, says):
    if "--ram-budget" in flags:
        flags = ("-m", str(gguf_path("mixtral")), *flags)
    done = serve(*flags)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("moestream: error: cannot serve") and says in last, done.stderr
    assert "Traceback" not in done.stderr


def test_a_corrupt_file_exits_with_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(gguf_path("mixtral").read_bytes()[:5000])  # truncated inside its tensor table
    done = serve("-m", str(bad))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("moestream: error: cannot serve broken.gguf")


def test_sampling_defaults_follow_the_flags_and_the_cli():
    seeded = subprocess.run([sys.executable, "-m", "moestream", "generate", "-p", PROMPT, "-n", "12", "--seed", "7",
                             "--no-echo"], capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    plain, greedy = start_server(), start_server("--temp", "0")
    try:
        from openai import OpenAI
        plain_client = OpenAI(base_url=plain.base_url, api_key="x", max_retries=0)
        greedy_client = OpenAI(base_url=greedy.base_url, api_key="x", max_retries=0)
        # a request that says nothing but the seed samples as `generate --seed` does (same defaults)
        r = plain_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, seed=7)
        assert r.choices[0].text == seeded.stdout.removesuffix("\n")
        # --temp 0 makes requests without a temperature greedy; one that sets it still samples
        a = greedy_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, seed=1).choices[0].text
        b = greedy_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, seed=2).choices[0].text
        t0 = plain_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
        assert a == b == t0.choices[0].text
    finally:
        plain.stop()
        greedy.stop()
    lines = [line for line in plain.output if "/v1/completions" in line]
    assert len(lines) == 2 and all("prompt" in line and "generated 12" in line and "tok/s" in line
                                   and "first token" in line and line.rstrip().endswith("length") for line in lines)


def test_no_log_requests_is_quiet():
    s = start_server("--no-log-requests")
    try:
        from openai import OpenAI
        OpenAI(base_url=s.base_url, api_key="x").completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    finally:
        s.stop()
    assert not [line for line in s.output if "/v1/completions" in line]
