"""Command-line flags shared by several subcommands."""

from __future__ import annotations

import argparse

from ..engine.sampling import SamplingParams


def add_model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, metavar="FILE", help="GGUF file of a Mixture-of-Experts model")
    p.add_argument("-c", "--ctx-size", type=int, default=None, metavar="N",
                   help="context length (default: the model's, capped at 4096)")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="threads for the CPU kernels (default: one per available core)")


def add_sampling_flags(p: argparse.ArgumentParser, default_temp: float = 0.8) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temp", type=float, default=default_temp, help="temperature; 0 = greedy (default %(default)s)")
    g.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens; 0 = off (default %(default)s)")
    g.add_argument("--top-p", type=float, default=0.95, help="nucleus mass; 1 = off (default %(default)s)")
    g.add_argument("--min-p", type=float, default=0.05, help="drop tokens below min-p x best; 0 = off (default %(default)s)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="1 = off (default %(default)s)")
    g.add_argument("--repeat-last-n", type=int, default=64, help="window of the repeat penalty (default %(default)s)")
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty, seed=args.seed,
    )


DEFAULT_CONTEXT_CAP = 4096


def context_length(args: argparse.Namespace, model_context: int) -> int:
    return args.ctx_size or min(model_context, DEFAULT_CONTEXT_CAP)
