"""`moestream bench`: prefill and decode speed on a GGUF, with a fixed seed (random prompt tokens, sampling
at temperature 1 so routing varies as in real use). Prints a summary; --json writes it."""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..engine.generate import forward_logits, new_sequence
from ..engine.loader import load_model
from ..engine.sampling import Sampler, SamplingParams
from ..errors import ConfigError
from ..kernels.cpu import NativeClock
from .options import add_model_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure prefill and decode tokens/s on a model")
    add_model_flag(p)
    p.add_argument("-n", "--n-decode", type=int, default=32, help="tokens to decode (default %(default)s)")
    p.add_argument("-p", "--prompt-tokens", type=int, default=512, help="prompt length (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n_decode < 1 or args.prompt_tokens < 1:
        raise ConfigError("--n-decode and --prompt-tokens must be >= 1")
    lm = load_model(args.model, threads=args.threads)
    ctx = args.prompt_tokens + args.n_decode + 1
    result = measure(lm, args.prompt_tokens, args.n_decode, args.seed, ctx)
    result.update(model=str(lm.path), threads=lm.model.compute.threads)
    print_summary(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


@torch.inference_mode()
def measure(lm, n_prompt: int, n_decode: int, seed: int, ctx: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, lm.model.vocab_size, (n_prompt,), generator=gen).tolist()
    seq = new_sequence(lm.model, prompt, ctx)
    t0 = time.perf_counter()
    logits = forward_logits(lm.model, seq, prompt)
    prefill = time.perf_counter() - t0
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed))
    native0, steps = NativeClock.seconds, []
    for _ in range(n_decode):
        t0 = time.perf_counter()
        token = sampler(logits, seq.tokens)
        seq.tokens.append(token)
        logits = forward_logits(lm.model, seq, [token])
        steps.append(time.perf_counter() - t0)
    decode, native = sum(steps), NativeClock.seconds - native0
    return {
        "prompt_tokens": n_prompt, "prefill_seconds": prefill, "prefill_tps": n_prompt / prefill,
        "decode_tokens": n_decode, "decode_seconds": decode, "decode_tps": n_decode / decode,
        "step_ms_p50": 1e3 * _pct(steps, 50), "step_ms_p95": 1e3 * _pct(steps, 95),
        "outside_native_us_per_token": 1e6 * (decode - native) / n_decode,
    }


def _pct(values: list[float], q: float) -> float:
    return float(torch.tensor(values).quantile(q / 100))


def print_summary(r: dict) -> None:
    print(f"prefill  {r['prompt_tokens']:>5} tokens  {r['prefill_tps']:9.2f} tok/s")
    print(f"decode   {r['decode_tokens']:>5} tokens  {r['decode_tps']:9.2f} tok/s   "
          f"step p50 {r['step_ms_p50']:.1f} ms, p95 {r['step_ms_p95']:.1f} ms")
    print(f"outside native kernels: {r['outside_native_us_per_token']:.0f} us per decoded token "
          f"(torch attention/norms/router + Python), threads {r['threads']}")
