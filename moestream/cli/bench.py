"""`moestream bench`: prefill and decode speed on a GGUF with a fixed seed (random prompt tokens, sampling at
temperature 1 so routing varies as in real use), measured through the engine's own scheduler step (Engine.bench),
so the numbers are those of the path generate and serve take. Prints the run summary; --stats-json (or --json)
writes it."""

from __future__ import annotations

import argparse

from ..engine import Engine
from ..errors import ConfigError
from .options import add_cache_flags, add_draft_flags, add_model_flag, engine_config, model_path, say_context
from .summary import print_run_summary, write_json


DEFAULT_PROMPT = 512


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure prefill and decode tokens/s, cache and I/O on a model")
    add_model_flag(p)
    p.add_argument("-n", "--n-decode", type=int, default=32, help="tokens to decode (default %(default)s)")
    p.add_argument("-p", "--prompt-tokens", type=int, default=None,
                   help="prompt length (default 512, or what the context leaves after -n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="first read every expert when the budget holds them all, then run the same shape once, "
                        "untimed, so first reads and packing are not counted (default on; llama-bench also warms up)")
    p.add_argument("--json", metavar="FILE", help="same as --stats-json")
    add_cache_flags(p)
    add_draft_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n_decode < 1 or (args.prompt_tokens is not None and args.prompt_tokens < 1):
        raise ConfigError("--n-decode and --prompt-tokens must be >= 1")  # before a load that may take minutes
    with Engine.open(model_path(args), engine_config(args)) as engine:
        say_context(engine)
        n_prompt = args.prompt_tokens or min(DEFAULT_PROMPT, engine.context_length - args.n_decode)
        result = engine.bench(n_prompt, args.n_decode, args.seed, args.warmup)
    print_run_summary(result)
    write_json(args.stats_json or args.json, result)
    return 0
