"""A/B of the AVX-512 VNNI kernel tier against the AVX2 tier on the CPU expert FFN, interleaved in one run.

Each round runs two fresh processes, one capped at MOESTREAM_KERNEL_TIER=avx2 and one on the best tier this CPU
has (the tier is fixed when the extension loads), in alternating order. Each times the fused MoE FFN (one native
call: Mixtral expert shape 4096 -> 14336 -> 4096, 8 experts, top-2) at T = 1, 8, 64 tokens, for Q4_0 and Q8_0, on
the GGUF layout (what a streamed expert is computed from) and on the packed layout (what a cached expert is
repacked into). Reports per-round times and the median ratio avx2 / avx512 (> 1: the new tier is faster).

Reproduce:  python bench/avx512_ab.py --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TOKENS = (1, 8, 64)


def worker(threads: int) -> None:
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType as Q

    sys.path.insert(0, os.path.dirname(__file__))
    from kernels_micro import random_weight, timed

    from moestream.formats.weight import ExpertWeights
    from moestream.kernels import cpu
    from moestream.layers.experts import group_by_expert

    rng, d, f, n_exp = np.random.default_rng(0), 4096, 14336, 8
    torch.manual_seed(0)
    out = {"tiers": {Q(t).name: tier for t, (tier, _) in cpu.kernel_table().items() if t < 64}}
    for qtype in (Q.Q4_0, Q.Q8_0):
        experts = [ExpertWeights(random_weight(qtype, f, d, rng), random_weight(qtype, f, d, rng),
                                 random_weight(qtype, d, f, rng)) for _ in range(n_exp)]
        for layout in ("gguf", "packed"):
            if layout == "packed":
                experts = [ExpertWeights(*(cpu.pack(m, threads) for m in e)) for e in experts]
            for t in TOKENS:
                x = torch.randn(t, d) * 0.1
                ids = torch.stack([torch.randperm(n_exp)[:2] for _ in range(t)])
                ids_list, offsets, pairs = group_by_expert(ids)
                selected = [experts[e] for e in ids_list]
                sec = timed(lambda: cpu.moe_ffn(x, selected, offsets, pairs // 2, torch.full((t * 2,), 0.5), threads),
                            5 if t < 64 else 2)
                out[f"{qtype.name} {layout} T={t}"] = sec * 1e3
    print(json.dumps(out))


def run_arm(tier: str | None, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MOESTREAM_KERNEL_TIER"}
    if tier:
        env["MOESTREAM_KERNEL_TIER"] = tier
    run = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.threads)
    rounds = []
    for r in range(args.rounds):
        order = ("avx2", None) if r % 2 == 0 else (None, "avx2")
        arms = {tier or "best": run_arm(tier, args.threads) for tier in order}
        rounds.append(arms)
        print(f"round {r}: best tier {arms['best']['tiers']['Q4_0']}", flush=True)
    keys = [k for k in rounds[0]["best"] if k != "tiers"]
    print(f"{time.strftime('%Y-%m-%d')}, {args.threads} threads, {args.rounds} rounds; ms per fused FFN call")
    print(f"{'case':<22} {'avx2 ms':>18} {'best ms':>18} {'median avx2/best':>17}")
    for key in keys:
        a = [rd["avx2"][key] for rd in rounds]
        b = [rd["best"][key] for rd in rounds]
        ratio = statistics.median(x / y for x, y in zip(a, b))
        print(f"{key:<22} {'/'.join(f'{v:.1f}' for v in a):>18} {'/'.join(f'{v:.1f}' for v in b):>18} {ratio:17.2f}")


if __name__ == "__main__":
    main()
