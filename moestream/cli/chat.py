"""`moestream chat`: an interactive conversation using the model's own chat template."""

from __future__ import annotations

import argparse
import sys

from ..engine import Engine, SamplingParams
from .generate import print_summary, stream_completion
from .options import (add_cache_flags, add_draft_flags, add_model_flag, add_sampling_flags, engine_config, model_path,
                      sampling_params)

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
    params = sampling_params(args)
    with Engine.open(model_path(args), engine_config(args)) as engine:
        return _converse(args, engine, params)


def _converse(args: argparse.Namespace, engine: Engine, params: SamplingParams) -> int:
    _ = engine.tokenizer, engine.template  # read now: a broken one is an error before the first line, not after
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {engine.path.name} ({engine.args.arch}); /exit or Ctrl-D to leave", file=sys.stderr)
    while (line := _read_user(interactive)) is not None:
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        # The whole conversation is re-encoded each turn: templates may rewrite earlier turns. What the user typed
        # stays text: '<|im_end|>' in a line cannot end the turn (encode_chat).
        prompt = engine.encode_chat(messages)
        text, stats = stream_completion(engine, prompt, params, args.n_predict, engine.tokenizer.eog_ids)
        messages.append({"role": "assistant", "content": text.strip()})
        if args.verbose:
            print_summary(stats)
    return 0


def _read_user(interactive: bool) -> str | None:
    try:
        line = input("> " if interactive else "")
    except EOFError:
        return None
    return None if line.strip() in EXIT_WORDS else line
