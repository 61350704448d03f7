"""`moestream chat`: an interactive conversation using the model's own chat template.

The session keeps going where a naive loop would stop:
- When the conversation no longer fits the context (with room for a reply), its oldest turns are dropped, the
  system prompt kept, and that is said once (as llama-cli's context shift does). A single message too long for
  the context is refused with the numbers, and the session goes on.
- Ctrl-C during a reply stops that reply (what was written stays in the conversation) and returns to the prompt;
  Ctrl-C or Ctrl-D at the prompt leaves. The signal only sets a flag that the reply loop reads between tokens, so
  no engine step is cut in half.
- `--seed` seeds the session: each turn draws its sampling seed from it, so a session replays exactly, but two
  turns do not sample alike.
- Commands: /clear (forget the conversation, keep the system prompt), /save FILE and /load FILE (the messages as
  JSON), /exit."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import signal
import sys
import threading
from pathlib import Path

from ..engine import Engine, SamplingParams
from ..errors import ConfigError
from .generate import print_summary, stream_completion
from .options import (add_cache_flags, add_draft_flags, add_model_flag, add_sampling_flags, engine_config, model_path,
                      sampling_params, say_context)

EXIT_WORDS = {"/exit", "/quit"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="interactive chat using the model's chat template")
    add_model_flag(p)
    p.add_argument("-s", "--system", default=None, help="system prompt")
    p.add_argument("-n", "--n-predict", type=int, default=512, metavar="N", help="max tokens per reply (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="print speed after each reply")
    add_sampling_flags(p)
    add_cache_flags(p)
    add_draft_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n_predict < 1:
        raise ConfigError(f"--n-predict must be >= 1, got {args.n_predict}")
    with Engine.open(model_path(args), engine_config(args)) as engine:
        say_context(engine)
        return Session(args, engine, sampling_params(args)).run()


class Session:
    def __init__(self, args: argparse.Namespace, engine: Engine, params: SamplingParams):
        _ = engine.tokenizer, engine.template  # read now: a broken one is an error before the first line
        self.args, self.engine, self.params = args, engine, params
        self.system = [{"role": "system", "content": args.system}] if args.system else []
        self.messages: list[dict] = list(self.system)
        self.seeds = random.Random(params.seed) if params.seed is not None else None
        self.interactive = sys.stdin.isatty()
        self.shift_said = False
        self.stop = threading.Event()  # set by Ctrl-C during a reply

    def run(self) -> int:
        if self.interactive:
            print(f"chatting with {self.engine.path.name} ({self.engine.args.arch}); Ctrl-C stops a reply, /clear, "
                  "/save FILE, /load FILE, /exit or Ctrl-D to leave", file=sys.stderr)
        while (line := self._read()) is not None:
            if line.strip().startswith("/"):
                self._command(line.strip())
            elif line.strip():
                self._turn(line)
        return 0

    # --- one turn ---------------------------------------------------------------------------------------------

    def _turn(self, line: str) -> None:
        self.messages.append({"role": "user", "content": line})
        prompt = self._fitted_prompt()
        if prompt is None:
            return
        room = self.engine.context_length - len(prompt)
        params = self._turn_params()
        with _stoppable(self.stop):
            text, stats = stream_completion(self.engine, prompt, params, min(self.args.n_predict, room),
                                            self.engine.tokenizer.eog_ids, self.stop.is_set)
        if self.stop.is_set():
            print("[stopped]", file=sys.stderr)
        self.messages.append({"role": "assistant", "content": text.strip()})
        if self.args.verbose:
            print_summary(stats)

    def _turn_params(self) -> SamplingParams:
        """This turn's sampling: the session's seed stream gives each turn its own seed."""
        if self.seeds is None:
            return self.params
        return dataclasses.replace(self.params, seed=self.seeds.randrange(2**63))

    def _fitted_prompt(self) -> list[int] | None:
        """The conversation's prompt, its oldest turns dropped until it leaves room for a reply; None (and the
        message dropped) when the last message alone is too long."""
        ctx = self.engine.context_length
        reserve = min(self.args.n_predict, ctx // 4)
        while True:
            prompt = self.engine.encode_chat(self.messages)
            if len(prompt) + reserve <= ctx:
                return prompt
            history = self.messages[len(self.system):-1]
            if not history:
                print(f"moestream: error: this message takes {len(prompt)} tokens with the system prompt, and the "
                      f"context holds {ctx} (with {reserve} for the reply); write a shorter one or raise -c",
                      file=sys.stderr)
                self.messages.pop()
                return None
            if not self.shift_said:
                print(f"moestream: note: the conversation outgrew the context ({ctx} tokens); dropping its oldest "
                      "turns from now on (the system prompt stays)", file=sys.stderr)
                self.shift_said = True
            drop = 2 if len(history) >= 2 and history[1]["role"] == "assistant" else 1  # a user turn and its reply
            del self.messages[len(self.system): len(self.system) + drop]

    # --- commands ---------------------------------------------------------------------------------------------

    def _command(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        if name == "/clear":
            self.messages = list(self.system)
            print("(conversation cleared)", file=sys.stderr)
        elif name in ("/save", "/load") and not arg.strip():
            print(f"moestream: error: {name} needs a file name", file=sys.stderr)
        elif name == "/save":
            self._save(Path(arg.strip()))
        elif name == "/load":
            self._load(Path(arg.strip()))
        else:
            print(f"moestream: error: unknown command {name}; try /clear, /save FILE, /load FILE, /exit",
                  file=sys.stderr)

    def _save(self, path: Path) -> None:
        try:
            path.write_text(json.dumps({"messages": self.messages}, ensure_ascii=False, indent=1))
        except OSError as exc:
            print(f"moestream: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return
        print(f"(saved {len(self.messages)} messages to {path})", file=sys.stderr)

    def _load(self, path: Path) -> None:
        try:
            messages = json.loads(path.read_text())["messages"]
            if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
                       ("system", "user", "assistant") for m in messages):
                raise ValueError("each message needs a role (system, user, assistant) and text content")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"moestream: error: cannot load {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return
        self.messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        self.system = self.messages[:1] if self.messages and self.messages[0]["role"] == "system" else []
        print(f"(loaded {len(self.messages)} messages from {path})", file=sys.stderr)

    def _read(self) -> str | None:
        try:
            line = input("> " if self.interactive else "")
        except (EOFError, KeyboardInterrupt):
            if self.interactive:
                print(file=sys.stderr)
            return None
        return None if line.strip() in EXIT_WORDS else line


@contextlib.contextmanager
def _stoppable(stop: threading.Event):
    """While a reply streams, Ctrl-C sets `stop` instead of raising inside an engine step."""
    stop.clear()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
