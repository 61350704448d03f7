"""Prefetch off vs on, interleaved in one run: decode tokens/s, share of decode time waiting on reads, hit rate,
bytes read per token, and the lookahead predictor's precision and recall (`moestream bench`'s own summary).

    PYTHONPATH=. python bench/prefetch_on_off.py FILE.gguf [--ram-budget 12GiB] [--rounds 2] [-p 16] [-n 24]
        [--policies lru layer-lfu] [--json out.json]

Drops the page cache before each run when it can (root), so every run starts cold."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def drop_page_cache() -> None:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass  # not root: runs start warm, equally for both arms


def one_run(model: str, budget: str, p: int, n: int, prefetch: bool, policy: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "moestream", "bench", "-m", model, "--ram-budget", budget, "-p", str(p),
               "-n", str(n), "--cache-policy", policy, "--stats-json", out.name, "--prefetch" if prefetch else "--no-prefetch"]
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads(Path(out.name).read_text())


def mean(d: dict) -> float:
    return sum(d.values()) / len(d) if d else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ram-budget", default="12GiB")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-p", type=int, default=16)
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--policies", nargs="+", default=["lru"], help="cache policies to run each arm with")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for rnd in range(args.rounds):
        for policy in args.policies:
            for prefetch in (False, True):
                drop_page_cache()
                rows.append(_row(rnd, policy, prefetch, one_run(args.model, args.ram_budget, args.p, args.n,
                                                                prefetch, policy)))
                print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_by_layer")}), flush=True)
    for policy in args.policies:
        _report([r for r in rows if r["policy"] == policy], policy)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


def _row(rnd: int, policy: str, prefetch: bool, s: dict) -> dict:
    return {"round": rnd, "policy": policy, "prefetch": prefetch, "decode_tps": s["decode_tps"],
            "io_wait_share": s["io_wait_share"], "hit_rate": s["hit_rate"],
            "bytes_per_token": s["decode_bytes_read_per_token"],
            "precision": mean(s["predictor_precision"]), "recall": mean(s["predictor_recall"]),
            "issued": s["prefetch_issued"], "useful": s["prefetch_useful"], "wasted": s["prefetch_wasted"],
            "late": s["prefetch_late"], "cancelled": s["prefetch_cancelled"],
            "precision_by_layer": s["predictor_precision"], "recall_by_layer": s["predictor_recall"]}


def _report(rows: list[dict], policy: str) -> None:
    print(f"\npolicy {policy}")
    print(f"{'prefetch':>8} {'decode tok/s':>12} {'I/O wait':>8} {'hit rate':>8} {'GB/token':>8} {'precision':>9} {'recall':>6}")
    for prefetch in (False, True):
        mine = [r for r in rows if r["prefetch"] == prefetch]
        med = lambda k: statistics.median(r[k] for r in mine)  # noqa: E731
        print(f"{'on' if prefetch else 'off':>8} {med('decode_tps'):>12.3f} {med('io_wait_share'):>8.1%} "
              f"{med('hit_rate'):>8.1%} {med('bytes_per_token') / 1e9:>8.2f} {med('precision'):>9.1%} {med('recall'):>6.1%}")
    off = statistics.median(r["io_wait_share"] for r in rows if not r["prefetch"])
    on = statistics.median(r["io_wait_share"] for r in rows if r["prefetch"])
    print(f"I/O wait share {off:.1%} -> {on:.1%}: {1 - on / off if off else 0:.0%} lower with prefetch")


if __name__ == "__main__":
    raise SystemExit(main())
