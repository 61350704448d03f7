"""Expert sharding: one rank whose budget holds a third of the experts (thrashing) against N ranks on loopback
with the same budget each (together they hold them all), interleaved in rounds, as ratios.

Each run is `moestream bench` (-p 16 -n 48, bench's own warm-up) with --stats-json; the N-rank run goes through
torchrun. Prints per round: decode tok/s, bytes read per decoded token, hit rate per rank, and the network's time
per token; then medians, and what the same arithmetic predicts for N machines on a LAN.

    python bench/shard_bench.py -m /root/cache/bench/mixtral-4l-q4_0.gguf --budget 1040MiB --ranks 3 --rounds 3 \\
        -o /tmp/shard-bench

--prefetch-ab compares N ranks without and with --prefetch instead (a per-rank budget smaller than each rank's
share, so the ranks thrash and reading ahead can pay), with each rank's reads ahead and how many were used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = ("bench", "-p", "16", "-n", "48")


def run(cmd: list[str], stats: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    r = json.loads(stats.read_text())
    r["wall_seconds"] = time.perf_counter() - t0
    return r


def one_rank(model: str, budget: str, stats: Path) -> dict:
    return run([sys.executable, "-m", "moestream", *BENCH, "-m", model, "--ram-budget", budget,
                "--stats-json", str(stats)], stats)


def ranks(model: str, budget: str, n: int, stats: Path, port: int, *flags: str) -> dict:
    return run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(n),
                "--master-port", str(port), "-m", "moestream", *BENCH, "-m", model, "--ram-budget", budget,
                "--shard", "experts", "--stats-json", str(stats), *flags], stats)


def per_token(r: dict) -> dict:
    """What one decoded token cost, from the summary's counters (they include the warm-up: so does bytes read)."""
    tokens = max(1, r["decode_tokens"])
    shard = r.get("shard_ranks") or []
    remote = [x for x in shard if x["rank"]]
    return {
        "decode_tps": r["decode_tps"],
        "bytes_read_per_token": r["decode_bytes_read_per_token"] + sum(
            x["bytes_read"] for x in remote) / max(1, r["decode_tokens"] + r["prompt_tokens"]),
        "hit_rate_by_rank": [round(x.get("hit_rate", r["hit_rate"]), 3) for x in shard] or [round(r["hit_rate"], 3)],
        "network_ms_per_token": 1e3 * sum(x["network_seconds"] for x in remote) / tokens,
        "exchange_bytes_per_token": sum(x["bytes_sent"] + x["bytes_received"] for x in remote) / tokens,
        "exchanges_per_token": sum(x["exchanges"] for x in remote) / tokens,
        "read_ahead_used_by_rank": [(x.get("prefetch_issued", 0), x.get("prefetch_useful", 0)) for x in shard],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--budget", required=True, help="per-rank --ram-budget")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/shard-bench"))
    ap.add_argument("--prefetch-ab", action="store_true", help="N ranks without against with --prefetch")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.prefetch_ab:
        return prefetch_ab(a)
    rows = []
    for i in range(a.rounds):
        one = per_token(one_rank(a.model, a.budget, a.out / f"one-{i}.json"))
        many = per_token(ranks(a.model, a.budget, a.ranks, a.out / f"ranks-{i}.json", 29700 + i))
        rows.append({"round": i, "one": one, "ranks": many, "speedup": many["decode_tps"] / one["decode_tps"]})
        print(json.dumps(rows[-1]), flush=True)
    med = statistics.median(r["speedup"] for r in rows)
    print(f"median speedup {a.ranks} ranks / 1 rank: {med:.2f}x over {a.rounds} rounds")
    (a.out / "report.json").write_text(json.dumps(rows, indent=1))


def prefetch_ab(a) -> None:
    rows = []
    for i in range(a.rounds):
        arms = [("off", ()), ("on", ("--prefetch",))]
        if i % 2:
            arms.reverse()
        got = {name: per_token(ranks(a.model, a.budget, a.ranks, a.out / f"pf-{name}-{i}.json", 29800 + 2 * i + j,
                                     *flags)) for j, (name, flags) in enumerate(arms)}
        rows.append({"round": i, **got, "speedup": got["on"]["decode_tps"] / got["off"]["decode_tps"]})
        print(json.dumps(rows[-1]), flush=True)
    med = statistics.median(r["speedup"] for r in rows)
    print(f"median speedup {a.ranks} ranks with / without --prefetch: {med:.2f}x over {a.rounds} rounds")
    (a.out / "prefetch-report.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
