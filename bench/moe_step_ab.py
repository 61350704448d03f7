"""The native MoE step off vs on, in one process on one loaded model, interleaved token by token: decode tokens/s and
the decode time outside native calls per token (`outside_native_us_per_token`, as `moestream bench` reports it),
every round shown, ratios against the PyTorch arm.

    PYTHONPATH=. python bench/moe_step_ab.py [-m FILE.gguf] [-p 64] [-n 32] [--rounds 3] [--threads 2]
        [--no-native-attn] [--json out.json]

Arms: `torch` runs every MoE layer on the PyTorch path (MoEBlock + ExpertFFNs around the native moe_ffn kernel),
`native` on the native MoE step; the switch is each block's `native_ffn`, so nothing else changes between arms (the
native attention step stays as the build chose, or off everywhere with --no-native-attn). One model, loaded once,
every expert read into the cache first (the run says if any read happened later), so both arms decode with every
expert in RAM. A round is two sequences with the same random prompt, one per arm, decoded alternately one token at
a time (sampled at temperature 1, so routing varies as in real use): this machine's load drifts by tens of percent
within seconds (other jobs share its 2 cores), and only step-by-step alternation puts both arms under the same
load. Without -m: the embedded default model."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from moestream.assets import DEFAULT_MODEL
from moestream.engine.loader import load_model
from moestream.engine.sampling import Sampler, SamplingParams
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.kernels.cpu import NativeClock

ARMS = ("torch", "native")


def read_every_expert(lm) -> None:
    """Warm-up: every expert into the cache (when the budget holds them all), so no round waits on a read."""
    for layer in range(lm.args.n_layers if lm.cache is not None else 0):
        for _ in lm.cache.acquire(layer, list(range(lm.args.n_experts))):
            pass


def set_arm(blocks, steps, arm: str) -> None:
    for b, s in zip(blocks, steps):
        b.native_ffn = s if arm == "native" else None


class Decoder:
    """One arm's sequence: prefilled at creation, then one sampled token per `step()`, timed."""

    def __init__(self, lm, prompt: list[int], n_decode: int, seed: int):
        self.lm, self.seq = lm, new_sequence(lm.model, prompt, len(prompt) + n_decode + 1)
        self.logits = forward_logits(lm.model, self.seq, prompt)
        self.sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed))
        self.seconds = self.native = 0.0

    def step(self) -> None:
        t0, native0 = time.perf_counter(), NativeClock.seconds
        token = self.sampler(self.logits, self.seq.tokens)
        self.seq.tokens.append(token)
        self.logits = forward_logits(self.lm.model, self.seq, [token])
        self.seconds += time.perf_counter() - t0
        self.native += NativeClock.seconds - native0


@torch.inference_mode()
def one_round(lm, blocks, steps, n_prompt: int, n_decode: int, seed: int) -> dict[str, dict]:
    prompt = torch.randint(0, lm.model.vocab_size, (n_prompt,), generator=torch.Generator().manual_seed(seed)).tolist()
    decoders = {}
    for arm in ARMS:
        set_arm(blocks, steps, arm)
        decoders[arm] = Decoder(lm, prompt, n_decode, seed)
    for i in range(n_decode):
        for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
            set_arm(blocks, steps, arm)
            decoders[arm].step()
    return {arm: {"decode_tps": n_decode / d.seconds,
                  "outside_native_us_per_token": 1e6 * (d.seconds - d.native) / n_decode}
            for arm, d in decoders.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=str(DEFAULT_MODEL))
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-native-attn", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    lm = load_model(args.model, progress=False, threads=args.threads)
    blocks = lm.model.blocks
    steps = [b.native_ffn for b in blocks]
    if args.no_native_attn:
        for b in blocks:
            b.native_attn = None
    print(f"{sum(s is not None for s in steps)} of {len(blocks)} layers have a native MoE step, "
          f"{sum(getattr(b, 'native_attn', None) is not None for b in blocks)} a native attention step", flush=True)
    read_every_expert(lm)
    misses = lm.cache.stats.misses if lm.cache is not None else 0
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm, res in one_round(lm, blocks, steps, args.p, args.n, seed=r).items():
            runs[arm].append(res)
            print(f"round {r + 1} {arm:7s} decode {res['decode_tps']:8.2f} tok/s  outside native "
                  f"{res['outside_native_us_per_token']:9.0f} us/token", flush=True)
    if lm.cache is not None:
        print(f"expert reads during the rounds: {lm.cache.stats.misses - misses}")
    lm.close()
    summary = report(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs}, indent=1))
    return 0


def report(runs: dict[str, list[dict]]) -> dict:
    ratios = [n["decode_tps"] / t["decode_tps"] for t, n in zip(runs["torch"], runs["native"])]
    keys = ("decode_tps", "outside_native_us_per_token")
    med = {arm: {key: statistics.median(r[key] for r in rs) for key in keys} for arm, rs in runs.items()}
    print(f"\n{'arm':7s} {'decode tok/s':>13s} {'outside native us/token':>24s}   (medians over rounds)")
    for arm, m in med.items():
        print(f"{arm:7s} {m['decode_tps']:13.2f} {m['outside_native_us_per_token']:24.0f}")
    print("native / torch decode tok/s per round: " + ", ".join(f"{x:.3f}" for x in ratios)
          + f" (median {statistics.median(ratios):.3f})")
    return {"median": med, "ratio_per_round": ratios}


if __name__ == "__main__":
    sys.exit(main())
