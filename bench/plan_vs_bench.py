"""`moestream plan`'s predicted decode speed against what `moestream bench` then measures, in one run.

For each file: one `bench` with every expert in RAM writes a routing profile (--stats-json); then, for each
budget, rounds of `plan --profile` (its prediction) followed at once by `bench` at the same budget (the
measurement), interleaved over budgets. Prints every round and the ratio predicted / measured; writes JSON.

    python bench/plan_vs_bench.py -m moestream/assets/tiny-mixtral-novels.gguf --budget auto --budget 1.6MiB \\
        -m /root/cache/bench/qwen3-4l-q4_0.gguf --budget auto --budget 350MiB --rounds 2 -o /tmp/plan-bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_FLAGS = ("-p", "64", "-n", "160")  # plan's compute runs: 64 prompt tokens, then decodes (3 s in all)


def moestream(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "moestream", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"moestream {' '.join(args)} failed:\n{done.stderr}")
    return done


def bench(model: str, budget: str, stats: Path) -> dict:
    moestream("bench", "-m", model, "--ram-budget", budget, *BENCH_FLAGS, "--stats-json", str(stats))
    return json.loads(stats.read_text())


def plan(model: str, budget: str, profile: Path) -> dict:
    return json.loads(moestream("plan", "-m", model, "--ram-budget", budget, "--profile", str(profile),
                                "--json").stdout)


def run(models: list[str], budgets: list[list[str]], rounds: int, out: Path) -> list[dict]:
    rows = []
    for model, sizes in zip(models, budgets):
        profile = out / f"{Path(model).stem}-profile.json"
        bench(model, "auto", profile)
        for r in range(rounds):
            for budget in sizes:
                predicted = plan(model, budget, profile)
                measured = bench(model, budget, out / f"{Path(model).stem}-{budget}-{r}.json")
                rows.append(row(model, budget, r, predicted, measured))
                print(line(rows[-1]), flush=True)
    return rows


def row(model: str, budget: str, r: int, p: dict, m: dict) -> dict:
    decode_reads = m["decode_bytes_read_per_token"] / m["slot_bytes"] if m.get("slot_bytes") else 0.0
    return {"model": Path(model).name, "budget": budget, "round": r, "slots": p["slots"],
            "expert_slots": p["expert_slots"], "predicted_tps": p["predicted_decode_tps"],
            "measured_tps": m["decode_tps"], "ratio": p["predicted_decode_tps"] / m["decode_tps"],
            "predicted_hit_rate": p["hit_rate"], "measured_hit_rate": m["hit_rate"],
            "compute_ms": 1e3 * p["compute_s_per_token"], "predicted_io_ms": 1e3 * p["io_s_per_token"],
            "measured_io_wait_ms": m["io_wait_ms_per_token"], "decode_reads_per_token": decode_reads,
            "read_latency_ms": 1e3 * p["read_latency_s"], "read_per_expert_ms": 1e3 * p["read_per_expert_s"]}


def line(r: dict) -> str:
    return (f"{r['model']:28} {r['budget']:>8} ({r['slots']:>4}/{r['expert_slots']} slots) round {r['round']}: "
            f"predicted {r['predicted_tps']:7.2f} tok/s, measured {r['measured_tps']:7.2f} -> {r['ratio']:.2f}x | "
            f"hit {r['predicted_hit_rate']:.0%} vs {r['measured_hit_rate']:.0%} (all lookups) | compute "
            f"{r['compute_ms']:.1f} ms + reads {r['predicted_io_ms']:.1f} ms predicted; measured I/O wait "
            f"{r['measured_io_wait_ms']:.1f} ms, {r['decode_reads_per_token']:.1f} expert reads/token")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", action="append", required=True)
    ap.add_argument("--budget", action="append", required=True,
                    help="budgets, given after each -m they belong to (or all for every model)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/plan-vs-bench"))
    args = ap.parse_args()
    per_model = _budgets_per_model(sys.argv[1:], len(args.model), args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows = run(args.model, per_model, args.rounds, args.out)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"worst |predicted/measured - 1| = {worst:.0%} over {len(rows)} pairs ({time.time() - t0:.0f} s)")
    for key in dict.fromkeys((r["model"], r["budget"]) for r in rows):
        ratios = sorted(r["ratio"] for r in rows if (r["model"], r["budget"]) == key)
        print(f"{key[0]} {key[1]}: median predicted/measured {ratios[len(ratios) // 2]:.2f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    (args.out / "plan_vs_bench.json").write_text(json.dumps(rows, indent=1))


def _budgets_per_model(argv: list[str], n_models: int, flat: list[str]) -> list[list[str]]:
    """The --budget values following each -m (every model gets them all if none follow a -m)."""
    groups, current = [], None
    for i, a in enumerate(argv):
        if a in ("-m", "--model"):
            current = []
            groups.append(current)
        elif a == "--budget" and current is not None:
            current.append(argv[i + 1])
    return groups if all(groups) and len(groups) == n_models else [flat] * n_models


if __name__ == "__main__":
    main()
