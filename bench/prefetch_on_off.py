"""Prefetch off vs on, interleaved in one run: decode tokens/s, share of decode time waiting on reads, hit rate,
bytes read per token, and the predictor's precision and recall (`moestream bench`'s own summary).

    PYTHONPATH=. python bench/prefetch_on_off.py FILE.gguf [--ram-budget 12GiB] [--rounds 2] [-p 16] [-n 24]
        [--arms lru/off lru/lookahead/1/0 layer-lfu/combined/3/0.3 ...] [--json out.json]

An arm is POLICY/off or POLICY/PREDICTOR/DEPTH/THRESHOLD; each prefetch arm is compared with its policy's off arm.
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


def one_run(model: str, budget: str, p: int, n: int, arm: str) -> dict:
    policy, *spec = arm.split("/")
    flags = ["--no-prefetch"] if spec == ["off"] else [
        "--prefetch", "--predictor", spec[0], "--prefetch-depth", spec[1], "--prefetch-threshold", spec[2]]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "moestream", "bench", "-m", model, "--ram-budget", budget, "-p", str(p),
               "-n", str(n), "--cache-policy", policy, "--stats-json", out.name, *flags]
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
    ap.add_argument("--arms", nargs="+", default=["lru/off", "lru/lookahead/1/0"],
                    help="POLICY/off or POLICY/PREDICTOR/DEPTH/THRESHOLD (default: %(default)s)")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for rnd in range(args.rounds):
        for arm in args.arms:
            drop_page_cache()
            rows.append(_row(rnd, arm, one_run(args.model, args.ram_budget, args.p, args.n, arm)))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_by_layer")}), flush=True)
    _report(rows, args.arms)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


def _row(rnd: int, arm: str, s: dict) -> dict:
    return {"round": rnd, "arm": arm, "decode_tps": s["decode_tps"],
            "io_wait_share": s["io_wait_share"], "io_wait_ms_per_token": s["io_wait_ms_per_token"],
            "compute_ms_p50": s["compute_ms_per_token"]["p50"], "hit_rate": s["hit_rate"],
            "bytes_per_token": s["decode_bytes_read_per_token"],
            "precision": mean(s["predictor_precision"]), "recall": mean(s["predictor_recall"]),
            "issued": s["prefetch_issued"], "useful": s["prefetch_useful"], "wasted": s["prefetch_wasted"],
            "late": s["prefetch_late"], "cancelled": s["prefetch_cancelled"],
            "precision_by_layer": s["predictor_precision"], "recall_by_layer": s["predictor_recall"]}


def _report(rows: list[dict], arms: list[str]) -> None:
    print(f"\n{'arm':>28} {'decode tok/s':>12} {'I/O wait':>8} {'ms/token':>8} {'compute ms':>10} {'hit rate':>8} "
          f"{'GB/token':>8} {'precision':>9} {'recall':>6} {'I/O wait vs off':>15}")
    for arm in arms:
        med = lambda k, a=arm: statistics.median(r[k] for r in rows if r["arm"] == a)  # noqa: E731
        off = arm.split("/")[0] + "/off"
        change = ""
        if off in arms and arm != off and med("io_wait_share", off):
            change = f"{med('io_wait_share') / med('io_wait_share', off) - 1:+.0%}"
        print(f"{arm:>28} {med('decode_tps'):>12.3f} {med('io_wait_share'):>8.1%} {med('io_wait_ms_per_token'):>8.1f} "
              f"{med('compute_ms_p50'):>10.1f} {med('hit_rate'):>8.1%} "
              f"{med('bytes_per_token') / 1e9:>8.2f} {med('precision'):>9.1%} {med('recall'):>6.1%} {change:>15}")


if __name__ == "__main__":
    raise SystemExit(main())
