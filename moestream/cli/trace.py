"""`moestream trace`: generate from one or more prompts and record every layer's routing to a JSON-lines file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import Engine
from ..errors import ConfigError
from .generate import stream_completion
from .options import add_cache_flags, add_model_flag, add_sampling_flags, engine_config, model_path, sampling_params
from .summary import print_run_summary, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="record routing (layer, positions, experts, probabilities) during generation")
    add_model_flag(p)
    p.add_argument("-p", "--prompt", action="append", default=[], help="prompt text (repeatable)")
    p.add_argument("--prompts", metavar="FILE", help="a text file with one prompt per line")
    p.add_argument("-n", "--n-predict", type=int, default=128, metavar="N", help="tokens per prompt (default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to write (JSON lines)")
    p.add_argument("--ahead", type=int, default=0, metavar="D",
                   help="also record the next D layers' router probabilities on each layer's hidden state, for "
                        "offline predictor studies (`moestream simulate --prefetch`) (default %(default)s)")
    add_sampling_flags(p)
    add_cache_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    prompts = _prompts(args)
    if not 0 <= args.ahead <= 8:
        raise ConfigError("--ahead must be between 0 and 8")
    params = sampling_params(args)
    with Engine.open(model_path(args), engine_config(args)) as engine:
        if not engine.args.n_experts:
            raise ConfigError(f"{engine.path.name} has no routed experts: there is no routing to trace")
        with _open_output(args.output) as out:
            recorder = engine.record_routing(out, args.ahead)
            for i, text in enumerate(prompts, 1):
                recorder.new_sequence()
                ids = engine.tokenizer.encode(text)
                print(f"[{i}] {text}", end="", flush=True)  # each continuation after its prompt, numbered
                stream_completion(engine, ids, params, args.n_predict, engine.tokenizer.eog_ids)
        summary = engine.summary()
        print_run_summary(summary)
        write_json(args.stats_json, summary)
        print(f"moestream: wrote {args.output} ({len(prompts)} prompts)", file=sys.stderr)
    return 0


def _prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts:
        try:
            prompts += [line for line in Path(args.prompts).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ConfigError(f"--prompts {args.prompts}: {exc.strerror}") from None
    if not prompts:
        raise ConfigError("give at least one prompt: -p TEXT or --prompts FILE")
    return prompts


def _open_output(path: str):
    try:
        return open(path, "w")
    except OSError as exc:
        raise ConfigError(f"-o {path}: {exc.strerror}") from None
