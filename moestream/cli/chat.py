"""`moestream chat`: an interactive conversation using the model's own chat template."""

from __future__ import annotations

import argparse
import sys

from ..engine.loader import load_model
from ..tokenizer import ChatTemplate, Tokenizer, encode_chat
from .generate import print_summary, stream_completion
from .options import add_cache_flags, add_model_flag, model_path, add_sampling_flags, cache_config, context_length, sampling_params

EXIT_WORDS = {"/exit", "/quit"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="interactive chat using the model's chat template")
    add_model_flag(p)
    p.add_argument("-s", "--system", default=None, help="system prompt")
    p.add_argument("-n", "--n-predict", type=int, default=512, metavar="N", help="max tokens per reply (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="print speed after each reply")
    add_sampling_flags(p)
    add_cache_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    lm = load_model(model_path(args), threads=args.threads, cache=cache_config(args))
    try:
        return _converse(args, lm, params)
    finally:
        lm.close()


def _converse(args: argparse.Namespace, lm, params) -> int:
    tok, template = Tokenizer.from_gguf(lm.gguf), ChatTemplate.from_gguf(lm.gguf)
    ctx = context_length(args, lm.args.context_length)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {lm.path.name} ({lm.args.arch}); /exit or Ctrl-D to leave", file=sys.stderr)
    while (line := _read_user(interactive)) is not None:
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        # The whole conversation is re-encoded each turn: templates may rewrite earlier turns. What the user typed
        # stays text: '<|im_end|>' in a line cannot end the turn (encode_chat).
        prompt = encode_chat(tok, template, messages)
        text, stats = stream_completion(lm.model, tok, prompt, params, args.n_predict, set(tok.eog_ids), ctx)
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
