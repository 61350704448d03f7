"""A real `moestream serve` process on a free loopback port (it binds port 0 and prints the one it got), serving
the embedded default model."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

API_KEY = "test-key"


@dataclass
class Server:
    proc: subprocess.Popen
    url: str = ""  # http://127.0.0.1:PORT, from the server's own "serving ... on" line
    output: list[str] = field(default_factory=list)  # everything it printed (drained, so the pipe never fills)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(*flags: str, timeout: float = 60.0) -> Server:
    """`moestream serve --port 0 FLAGS`: the server binds a free port itself and says which."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "moestream", "serve", "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    server = Server(proc)
    threading.Thread(target=lambda: server.output.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError(f"server exited {proc.returncode}: {''.join(server.output)}")
        if not server.url:
            found = [m for line in list(server.output) if (m := re.search(r"on (http://[^/\s]+)/v1", line))]
            server.url = found[0].group(1) if found else ""
        elif _healthy(server.url):
            return server
        time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"server not ready: {''.join(server.output)}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server():
    s = start_server("--api-key", API_KEY, "--max-batch", "16")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=60)
