"""`moestream chat` as a person uses it: a conversation three times longer than the context keeps going (the
oldest turns dropped, said once), a seed makes the session reproducible without making turns alike, /clear,
/save and /load, and Ctrl-C in a real terminal (a pty) stops the reply, not the session."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

CHAT = [sys.executable, "-m", "moestream", "chat"]
QUESTIONS = ["Where is Mr. Darcy?", "And what did Emma say?", "Was it raining?", "Who came to dinner?"] * 3


def chat(stdin: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CHAT, *flags], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_a_conversation_three_times_the_context_keeps_going():
    # 12 turns of up to 60 tokens each on the embedded model's 256-token context
    done = chat("\n".join(QUESTIONS) + "\n", "-n", "60", "--seed", "3")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "outgrew the context" in line]
    assert len(notes) == 1 and "system prompt stays" in notes[0]
    assert "error" not in done.stderr
    assert len([line for line in done.stdout.splitlines() if line.strip()]) >= len(QUESTIONS)  # every turn answered


def test_a_seed_replays_the_session_but_turns_differ():
    two = "Where is Mr. Darcy?\nWhere is Mr. Darcy?\n"
    first, again = chat(two, "-n", "16", "--seed", "5"), chat(two, "-n", "16", "--seed", "5")
    assert first.stdout == again.stdout
    replies = first.stdout.splitlines()
    assert len(replies) == 2 and replies[0] != replies[1]


def test_clear_save_and_load(tmp_path):
    saved = tmp_path / "talk.json"
    done = chat(f"Hello there\n/save {saved}\n/clear\n/load {saved}\n/load {tmp_path / 'none.json'}\n/frob\n",
                "-n", "8", "-s", "You are Emma.")
    assert done.returncode == 0, done.stderr
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"] and messages[1]["content"] == "Hello there"
    assert "(conversation cleared)" in done.stderr and "(loaded 3 messages" in done.stderr
    assert "cannot load" in done.stderr and "unknown command /frob" in done.stderr


def _read_until(fd: int, needle: bytes, limit: float) -> bytes:
    out, deadline = b"", time.monotonic() + limit
    while needle not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out


def test_ctrl_c_stops_the_reply_and_the_session_goes_on():
    for _ in range(3):  # the tiny model may finish a reply before the signal lands: then try again
        master, slave = pty.openpty()
        proc = subprocess.Popen([*CHAT, "-n", "240"], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        os.close(slave)
        try:
            _read_until(master, b"> ", 60)
            os.write(master, b"Tell me a long story about the garden.\r")
            _read_until(master, b"story about the garden.", 10)
            time.sleep(0.05)  # the first words of the reply
            proc.send_signal(signal.SIGINT)
            out = _read_until(master, b"> ", 30)
            if b"[stopped]" not in out:
                continue
            os.write(master, b"And then?\r")
            out += _read_until(master, b"> ", 60)
            os.write(master, b"/exit\r")
            assert proc.wait(timeout=30) == 0
            assert out.count(b"> ") >= 2  # back at the prompt after the stop, and again after the next reply
            return
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
    raise AssertionError("Ctrl-C never landed inside a reply in three tries")
