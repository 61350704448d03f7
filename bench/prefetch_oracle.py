"""The ceiling of prefetch on this machine: `moestream bench`'s run with a perfect predictor. A first run records
every acquire (layer, experts) with prefetch off; later runs, from a cold page cache, replay the same seeded
generation with an oracle that "predicts" exactly the experts the next DEPTH layers will use. What is left of the
I/O wait then is what no predictor with that lead time can hide (read time, bandwidth, slots).

    PYTHONPATH=. python bench/prefetch_oracle.py FILE.gguf [--ram-budget 12GiB] [-p 16] [-n 24] [--depths 1 2 3]
        [--rounds 2]

Routing does not depend on the cache or on prefetch (tests/cache/test_prefetch.py), so the recorded acquires are
the ones every later run makes; the oracle checks that as it goes."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.prefetch_on_off import drop_page_cache


class Oracle:
    """Replays recorded acquires: at acquire i of layer L, scores 1 for the experts the next `depth` MoE layers
    use in the same step."""

    name, uses_router = "oracle", False

    def __init__(self, log: list[tuple[int, list[int]]], n_experts: int):
        self.log, self.n_experts, self.i = log, n_experts, 0

    def predict(self, layer, experts, ahead, targets):
        if tuple(self.log[self.i]) != (layer, list(experts)):
            raise RuntimeError(f"acquire {self.i} differs from the recorded run: routing is not reproducible")
        out = {}
        for later, later_experts in self.log[self.i + 1:]:
            if later <= layer:
                break  # the next step
            if later in targets:
                scores = torch.zeros(self.n_experts)
                scores[later_experts] = 1.0
                out[later] = scores
        self.i += 1
        return out


def one_run(args, mode: str, depth: int, log_path: Path) -> dict:
    """In this process: load, optionally record or replay, run bench's measurement."""
    from moestream.engine import CacheConfig, Engine, EngineConfig, parse_bytes
    from moestream.prefetch.lookahead import Prefetcher

    config = EngineConfig(cache=CacheConfig(ram_budget=parse_bytes(args.ram_budget)), progress=False)
    with Engine.open(args.model, config) as engine:
        log: list = []
        if mode == "record":
            engine.cache.on_acquire = lambda layer, experts: log.append((layer, list(experts)))
        elif mode == "oracle":
            oracle = Oracle(json.loads(log_path.read_text()), engine.args.n_experts)
            Prefetcher(engine.model, engine.cache, oracle, depth, 0.0).install()
        result = engine.bench(args.p, args.n, 0)
    if mode == "record":
        log_path.write_text(json.dumps(log))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ram-budget", default="12GiB")
    ap.add_argument("-p", type=int, default=16)
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("MODE", "DEPTH"), help=argparse.SUPPRESS)  # child process
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args, args.one[0], int(args.one[1]), Path(args.log))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "acquires.json"
        rows = []
        for rnd in range(args.rounds):
            for mode, depth in [("record", 0)] + [("oracle", d) for d in args.depths]:
                drop_page_cache()
                cmd = [sys.executable, __file__, args.model, "--ram-budget", args.ram_budget, "-p", str(args.p),
                       "-n", str(args.n), "--one", mode, str(depth), "--log", str(log)]
                s = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                arm = "off" if mode == "record" else f"oracle depth {depth}"
                rows.append({"round": rnd, "arm": arm, "decode_tps": s["decode_tps"],
                             "io_wait_share": s["io_wait_share"], "stall_ms": s["io_wait_ms_per_token"],
                             "compute_ms": s["compute_ms_per_token"]["p50"], "hit_rate": s["hit_rate"],
                             "gb_per_token": s["decode_bytes_read_per_token"] / 1e9, "late": s["prefetch_late"],
                             "useful": s["prefetch_useful"]})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'arm':>16} {'decode tok/s':>12} {'I/O wait':>8} {'stall ms':>8} {'compute ms':>10} {'hit rate':>8} "
          f"{'GB/token':>8} {'I/O wait vs off':>15}")
    off = statistics.median(r["io_wait_share"] for r in rows if r["arm"] == "off")
    for arm in dict.fromkeys(r["arm"] for r in rows):
        med = lambda k, a=arm: statistics.median(r[k] for r in rows if r["arm"] == a)  # noqa: E731
        print(f"{arm:>16} {med('decode_tps'):>12.3f} {med('io_wait_share'):>8.1%} {med('stall_ms'):>8.1f} "
              f"{med('compute_ms'):>10.1f} {med('hit_rate'):>8.1%} {med('gb_per_token'):>8.2f} "
              f"{med('io_wait_share') / off - 1:>+15.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
