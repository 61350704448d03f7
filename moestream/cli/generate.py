"""`moestream generate`: complete a prompt, streaming text to stdout as tokens are produced."""

from __future__ import annotations

import argparse
import sys

from ..engine import Engine, GenerationStats, SamplingParams
from ..errors import ConfigError
from .options import (add_cache_flags, add_draft_flags, add_model_flag, add_sampling_flags, engine_config, model_path,
                      sampling_params)
from .summary import print_run_summary, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete a prompt, streaming tokens to stdout")
    add_model_flag(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text")
    p.add_argument("-n", "--n-predict", type=int, default=128, metavar="N", help="tokens to generate (default %(default)s)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")
    p.add_argument("--no-echo", action="store_true", help="do not print the prompt before the completion")
    add_sampling_flags(p)
    add_cache_flags(p)
    add_draft_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    if args.n_predict < 0:
        raise ConfigError(f"--n-predict must be >= 0, got {args.n_predict}")
    with Engine.open(model_path(args), engine_config(args)) as engine:
        tok = engine.tokenizer
        prompt = tok.encode(args.prompt, add_bos=False if args.no_bos else None)
        if not prompt:
            raise ConfigError("the prompt encodes to no tokens; give a non-empty prompt or drop --no-bos")
        if not args.no_echo:
            _write(args.prompt)
        stop = frozenset() if args.ignore_eos else tok.eog_ids
        _, stats = stream_completion(engine, prompt, params, args.n_predict, stop)
        print_summary(stats)
        summary = engine.summary()
        print_run_summary(summary)
        write_json(args.stats_json, summary)
    return 0


def stream_completion(engine: Engine, prompt: list[int], params: SamplingParams, n: int,
                      stop: frozenset[int]) -> tuple[str, GenerationStats]:
    """Generate and print text pieces as they complete; returns the text and the run's statistics."""
    decoder, stats, pieces = engine.tokenizer.stream(), GenerationStats(prompt_tokens=len(prompt)), []
    for event in engine.generate(prompt, params, n, stop):
        pieces.append(decoder.push(event.token))
        _write(pieces[-1])
        stats = event.stats or stats
    pieces.append(decoder.flush())
    _write(pieces[-1] + "\n")
    return "".join(pieces), stats


def print_summary(stats: GenerationStats) -> None:
    print(
        f"prompt: {stats.prompt_tokens} tokens, {stats.prefill_tps:.1f} tok/s | "
        f"generated: {stats.generated_tokens} tokens, {stats.decode_tps:.2f} tok/s | "
        f"finish: {stats.finish_reason or 'length'}",
        file=sys.stderr,
    )


def _write(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
