"""The embedded default model: with no -m, generate/chat/bench use it, say so, and write deterministic,
valid UTF-8 English under a fixed seed."""

from __future__ import annotations

import re
import subprocess
import sys

from moestream.assets import DEFAULT_MODEL
from moestream.formats.gguf import GGUFFile

COMMON_WORDS = {"the", "and", "of", "to", "a", "her", "was", "in", "he", "she", "it", "that", "i", "you", "not",
                "his", "be", "had", "with", "as", "for", "my", "is", "at", "but", "him", "said", "mr", "so"}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    # bytes, not text: the test decodes strictly itself
    return subprocess.run([sys.executable, "-m", "moestream", *args], capture_output=True, input=stdin, timeout=120)


def test_shipped_model_is_a_small_mixtral():
    assert DEFAULT_MODEL.stat().st_size < 16 << 20
    g = GGUFFile(DEFAULT_MODEL)
    assert g.architecture == "llama"
    assert g.get("llama.expert_count") >= 8 and g.get("llama.expert_used_count") == 2
    assert g.get("llama.block_count") >= 4


def test_generate_without_model_is_deterministic_readable_utf8():
    args = ("generate", "-p", "It was a fine morning, and", "-n", "40", "--seed", "7")
    first, second = run(*args), run(*args)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    assert first.stdout == second.stdout
    assert b"embedded default model" in first.stderr
    text = first.stdout.decode("utf-8")  # strict: raises on invalid UTF-8
    continuation = text.split("It was a fine morning, and", 1)[1]
    words = re.findall(r"[a-z]+", continuation.lower())
    assert len(words) >= 15, text
    assert len(COMMON_WORDS.intersection(words)) >= 3, text
    letters = sum(c.isalpha() or c.isspace() for c in continuation)
    assert letters >= 0.8 * len(continuation), text
    other = run("generate", "-p", "It was a fine morning, and", "-n", "40", "--seed", "8")
    assert other.stdout != first.stdout  # the seed matters


def test_chat_and_bench_without_model():
    chat = run("chat", "-n", "12", "--seed", "1", stdin=b"Where is Mr. Darcy?\n")
    assert chat.returncode == 0, chat.stderr.decode(errors="replace")
    assert chat.stdout.decode("utf-8").strip()
    bench = run("bench", "-p", "8", "-n", "8")
    assert bench.returncode == 0, bench.stderr.decode(errors="replace")
    assert b"embedded default model" in bench.stderr and b"decode" in bench.stderr
