"""`moestream generate`: complete a prompt, streaming text to stdout as tokens are produced."""

from __future__ import annotations

import argparse
import sys

from ..engine import Engine, GenerationStats, SamplingParams
from ..errors import ConfigError
from .options import (add_cache_flags, add_draft_flags, add_model_flag, add_sampling_flags, engine_config, model_path,
                      sampling_params, say_context)
from .summary import print_run_summary, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete a prompt, streaming tokens to stdout")
    add_model_flag(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text")
    p.add_argument("-n", "--n-predict", type=int, default=128, metavar="N", help="tokens to generate (default %(default)s)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")
    p.add_argument("--no-echo", action="store_true", help="do not print the prompt before the completion")
    add_output_flags(p)
    add_sampling_flags(p)
    add_cache_flags(p)
    add_draft_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    if args.n_predict < 0:
        raise ConfigError(f"--n-predict must be >= 0, got {args.n_predict}")
    with Engine.open(model_path(args), engine_config(args)) as engine:
        say_context(engine)
        tok = engine.tokenizer
        prompt = tok.encode(args.prompt, add_bos=False if args.no_bos else None)
        if not prompt:
            hint = " or drop --no-bos" if args.no_bos else ""
            raise ConfigError(f"the prompt encodes to no tokens; give a non-empty prompt{hint}")
        n = capped_tokens(engine, len(prompt), args.n_predict)
        if not args.no_echo:
            _write(args.prompt)
        stop = frozenset() if args.ignore_eos else tok.eog_ids
        _, stats = stream_completion(engine, prompt, params, n, stop)
        summary = engine.summary()
        print_output_summary(args, stats, summary)
        write_json(args.stats_json, summary)
    return 0


def capped_tokens(engine: Engine, prompt_tokens: int, wanted: int) -> int:
    """`wanted` new tokens, or what the context has room for after the prompt, said in one line."""
    room = engine.context_length - prompt_tokens
    if prompt_tokens >= engine.context_length:
        raise ConfigError(f"the prompt has {prompt_tokens} tokens but the context holds {engine.context_length}; "
                          "shorten it or raise -c")
    if wanted > room:
        print(f"moestream: note: -n {wanted} capped at {room}: the context holds {engine.context_length} tokens and "
              f"the prompt takes {prompt_tokens}", file=sys.stderr)
    return min(wanted, room)


def stream_completion(engine: Engine, prompt: list[int], params: SamplingParams, n: int, stop: frozenset[int],
                      should_stop=lambda: False) -> tuple[str, GenerationStats]:
    """Generate and print text pieces as they complete; returns the text and the run's statistics. `should_stop`
    is asked after every token (chat's Ctrl-C): leaving the loop cancels the request."""
    decoder, stats, pieces = engine.tokenizer.stream(), GenerationStats(prompt_tokens=len(prompt)), []
    events = engine.generate(prompt, params, n, stop)
    for event in events:
        pieces.append(decoder.push(event.token))
        _write(pieces[-1])
        stats = event.stats or stats
        stats.generated_tokens = max(stats.generated_tokens, len(pieces))
        if should_stop():
            events.close()
            stats.finish_reason = "stopped"
            break
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


def add_output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="print no summary after the text")
    g.add_argument("--stats", "--verbose", dest="stats", action="store_true",
                   help="print the full run summary (cache, reads, memory, latency) instead of one line")


def print_output_summary(args: argparse.Namespace, stats: GenerationStats, summary: dict) -> None:
    """Nothing (--quiet), the full table (--stats), or one line."""
    if args.quiet:
        return
    if args.stats:
        print_summary(stats)
        print_run_summary(summary)
        return
    print(one_line(stats, summary), file=sys.stderr)


def one_line(stats: GenerationStats, summary: dict) -> str:
    """'prompt 6 tok · generated 64 tok, 82.4 tok/s · hit 97 % · read 0.0 GB · length'."""
    parts = [f"prompt {stats.prompt_tokens} tok",
             f"generated {stats.generated_tokens} tok, {stats.decode_tps:.1f} tok/s"]
    if "hit_rate" in summary:
        parts.append(f"hit {100 * summary['hit_rate']:.0f} %")
        parts.append(f"read {summary['bytes_read'] / 1e9:.1f} GB")
    parts.append(stats.finish_reason or "length")
    return " · ".join(parts)


def _write(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
