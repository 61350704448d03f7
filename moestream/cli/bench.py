"""`moestream bench`: prefill and decode speed on a GGUF with a fixed seed (random prompt tokens, sampling at
temperature 1 so routing varies as in real use). Prints the run summary; --stats-json (or --json) writes it."""

from __future__ import annotations

import argparse
import time

import torch

from ..engine.generate import forward_logits, new_sequence
from ..engine.loader import load_model
from ..engine.report import StepMeter, run_summary
from ..engine.sampling import Sampler, SamplingParams
from ..errors import ConfigError
from ..kernels.cpu import NativeClock
from .options import add_cache_flags, add_model_flag, model_path, cache_config
from .summary import print_run_summary, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure prefill and decode tokens/s, cache and I/O on a model")
    add_model_flag(p)
    p.add_argument("-n", "--n-decode", type=int, default=32, help="tokens to decode (default %(default)s)")
    p.add_argument("-p", "--prompt-tokens", type=int, default=512, help="prompt length (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="same as --stats-json")
    add_cache_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n_decode < 1 or args.prompt_tokens < 1:
        raise ConfigError("--n-decode and --prompt-tokens must be >= 1")
    lm = load_model(model_path(args), threads=args.threads, cache=cache_config(args))
    try:
        result = measure(lm, args.prompt_tokens, args.n_decode, args.seed)
    finally:
        lm.close()
    print_run_summary(result)
    write_json(args.stats_json or args.json, result)
    return 0


@torch.inference_mode()
def measure(lm, n_prompt: int, n_decode: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, lm.model.vocab_size, (n_prompt,), generator=gen).tolist()
    seq = new_sequence(lm.model, prompt, n_prompt + n_decode + 1)
    t0 = time.perf_counter()
    logits = forward_logits(lm.model, seq, prompt)
    prefill = time.perf_counter() - t0
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed))
    meter, native0 = StepMeter(lm.cache), NativeClock.seconds
    for _ in range(n_decode):
        token = sampler(logits, seq.tokens)
        seq.tokens.append(token)
        logits = forward_logits(lm.model, seq, [token])
        meter.lap()
    result = run_summary(lm, n_prompt, prefill, meter)
    result["seed"] = seed
    # decode time outside the native kernels: torch attention/norms/router, Python, and waiting on reads
    result["outside_native_us_per_token"] = 1e6 * (meter.steps.total - (NativeClock.seconds - native0)) / n_decode
    return result
