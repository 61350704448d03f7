"""`moestream generate`: complete a prompt, streaming text to stdout as tokens are produced."""

from __future__ import annotations

import argparse
import sys

from ..engine.generate import GenerationStats, generate
from ..engine.loader import load_model
from ..engine.report import StepMeter, run_summary
from ..errors import ConfigError
from ..tokenizer import Tokenizer
from .options import add_cache_flags, add_model_flag, model_path, add_sampling_flags, cache_config, context_length, sampling_params
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    if args.n_predict < 0:
        raise ConfigError(f"--n-predict must be >= 0, got {args.n_predict}")
    lm = load_model(model_path(args), threads=args.threads, cache=cache_config(args))
    try:
        tok = Tokenizer.from_gguf(lm.gguf)
        prompt = tok.encode(args.prompt, add_bos=False if args.no_bos else None)
        if not prompt:
            raise ConfigError("the prompt encodes to no tokens; give a non-empty prompt or drop --no-bos")
        if not args.no_echo:
            _write(args.prompt)
        stop = set() if args.ignore_eos else set(tok.eog_ids)
        meter = StepMeter(lm.cache)
        _, stats = stream_completion(lm.model, tok, prompt, params, args.n_predict, stop,
                                     context_length(args, lm.args.context_length), meter)
        print_summary(stats)
        summary = run_summary(lm, stats.prompt_tokens, stats.prefill_seconds, meter)
        print_run_summary(summary)
        write_json(args.stats_json, summary)
    finally:
        lm.close()
    return 0


def stream_completion(model, tok: Tokenizer, prompt: list[int], params, n: int, stop: set[int],
                      ctx: int, meter: StepMeter | None = None) -> tuple[str, GenerationStats]:
    """Generate and print text pieces as they complete; returns the text and the run's statistics.
    meter: timed from the first token (prefill done) to each next one, i.e. per decode step."""
    decoder, stats, pieces = tok.stream(), GenerationStats(prompt_tokens=len(prompt)), []
    for i, event in enumerate(generate(model, prompt, params, n, stop_ids=stop, context_length=ctx)):
        if meter is not None:
            meter.lap() if i else meter.start()
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
