"""Microbenchmark of the native CPU kernels.

Reports, in one run: GB/s of weight bytes for a 1-token matvec on 4096x14336 and 14336x4096 weights per quant
type; tokens/s of the fused MoE FFN (Mixtral expert shape, 8 experts, top-2) at T = 1, 8, 64; and the machine's
memory bandwidth (read+write of a 1 GiB buffer) beside them. Weights are random bytes (speed does not depend
on values). Prints a table and writes JSON.

Reproduce:  python bench/kernels_micro.py --threads 2 --json /root/cache/bench/kernels_micro.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

from moestream.formats.weight import ExpertWeights, QuantWeight
from moestream.kernels import cpu
from moestream.layers.experts import group_by_expert

TYPES = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.F16, Q.BF16, Q.F32]
SHAPES = [(14336, 4096), (4096, 14336)]  # (rows, cols): up/gate and down of a Mixtral expert


def random_weight(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> QuantWeight:
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block * size), dtype=np.uint8)
    if qtype in (Q.F16, Q.BF16, Q.F32):  # finite floats, so timings are not of NaN paths
        dtype = {Q.F16: np.float16, Q.BF16: np.float32, Q.F32: np.float32}[qtype]
        vals = (rng.standard_normal((rows, cols)) * 0.02).astype(dtype)
        raw = (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8) if qtype == Q.BF16 else vals.view(np.uint8)
    return QuantWeight(torch.from_numpy(np.ascontiguousarray(raw)), qtype, (rows, cols))


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memory_bandwidth(threads: int) -> float:
    """GB/s of DRAM traffic (read + write) of a 1 GiB copy with `threads` threads."""
    torch.set_num_threads(threads)
    src = torch.ones(1 << 28, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / timed(lambda: dst.copy_(src), 5) / 1e9  # bytes read + bytes written


COLD_BYTES = 160 << 20  # cycle through this many weight bytes (5x this machine's 32 MiB L3) so reads hit DRAM


def matvec_rows(threads: int, rng, repeat: int) -> list[dict]:
    rows = []
    for qtype in TYPES:
        for n, k in SHAPES:
            first = random_weight(qtype, n, k, rng)
            ws = [first] + [random_weight(qtype, n, k, rng) for _ in range(COLD_BYTES // first.nbytes)]
            x, turn = torch.randn(1, k), iter(range(10**9))
            sec = timed(lambda: cpu.matmul(x, ws[next(turn) % len(ws)], threads), repeat * len(ws))
            rows.append({"type": qtype.name, "shape": f"{n}x{k}", "ms": sec * 1e3, "GB/s": first.nbytes / sec / 1e9})
    return rows


def fused_ffn_rows(threads: int, rng, qtype: Q, repeat: int) -> list[dict]:
    d, f, n_exp = 4096, 14336, 8
    experts = [ExpertWeights(random_weight(qtype, f, d, rng), random_weight(qtype, f, d, rng),
                             random_weight(qtype, d, f, rng)) for _ in range(n_exp)]
    out = []
    for t in (1, 8, 64):
        x = torch.randn(t, d) * 0.1
        ids = torch.stack([torch.randperm(n_exp)[:2] for _ in range(t)])
        ids_list, offsets, pairs = group_by_expert(ids)
        rows, wts = pairs // 2, torch.full((t * 2,), 0.5)
        selected = [experts[e] for e in ids_list]
        sec = timed(lambda: cpu.moe_ffn(x, selected, offsets, rows, wts, threads), repeat)
        nbytes = sum(m.nbytes for e in selected for m in e)
        out.append({"type": qtype.name, "tokens": t, "experts": len(selected), "ms": sec * 1e3,
                    "tokens/s": t / sec, "GB/s": nbytes / sec / 1e9})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=cpu.default_threads())
    ap.add_argument("--repeat", type=int, default=3, help="passes over the cold weight set (default %(default)s)")
    ap.add_argument("--json", default="/root/cache/bench/kernels_micro.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "date": time.strftime("%Y-%m-%d"), "memory_GBps": memory_bandwidth(args.threads),
              "tiers": {Q(t).name: tier for t, (tier, _) in cpu.kernel_table().items()},
              "matvec": matvec_rows(args.threads, rng, args.repeat),
              "fused_ffn": fused_ffn_rows(args.threads, rng, Q.Q4_0, args.repeat)
              + fused_ffn_rows(args.threads, rng, Q.Q4_K, args.repeat)}
    print_tables(result)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)


def print_tables(r: dict) -> None:
    print(f"memory bandwidth (1 GiB copy, read + write): {r['memory_GBps']:.1f} GB/s; "
          f"threads {r['threads']}; matvec weights cycle through {COLD_BYTES >> 20} MiB (L3 is 32 MiB)")
    print(f"{'type':<6} {'shape':<11} {'ms':>8} {'GB/s':>7} {'of mem':>7}")
    for row in r["matvec"]:
        print(f"{row['type']:<6} {row['shape']:<11} {row['ms']:8.2f} {row['GB/s']:7.1f} {row['GB/s'] / r['memory_GBps']:7.0%}")
    print(f"{'type':<6} {'T':>3} {'experts':>7} {'ms':>8} {'tok/s':>8} {'GB/s':>7}")
    for row in r["fused_ffn"]:
        print(f"{row['type']:<6} {row['tokens']:>3} {row['experts']:>7} {row['ms']:8.2f} {row['tokens/s']:8.1f} {row['GB/s']:7.1f}")


if __name__ == "__main__":
    main()
