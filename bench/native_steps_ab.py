"""Native layer steps off vs on, interleaved in one run: `moestream bench`'s decode tokens/s and the decode time
outside native calls per token (`outside_native_us_per_token`), every round shown, ratios against the torch arm.

    PYTHONPATH=. python bench/native_steps_ab.py [-m FILE.gguf] [-p 64] [-n 32] [--rounds 3]
        [--arms torch attn native] [--json out.json]

Arms: `torch` runs with MOESTREAM_NO_NATIVE_STEP=1 (PyTorch attention and MoE around the native matmuls), `native`
with every native step on, `attn` with the attention step only (the MoE step's `enabled` patched off in the bench
process, so the two steps can be told apart while both are in the tree). Without -m: the embedded default model."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ATTN_ONLY = """
import sys
try:
    from moestream.layers.moe_step import NativeMoEStep
    NativeMoEStep.enabled = lambda self: False
except ImportError:
    pass
from moestream.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
ARMS = {  # name -> (extra environment, interpreter arguments before `bench`)
    "torch": ({"MOESTREAM_NO_NATIVE_STEP": "1"}, ["-m", "moestream"]),
    "attn": ({}, ["-c", ATTN_ONLY]),
    "native": ({}, ["-m", "moestream"]),
}


def one_run(arm: str, model: str | None, p: int, n: int) -> dict:
    extra, launcher = ARMS[arm]
    env = {k: v for k, v in os.environ.items() if k != "MOESTREAM_NO_NATIVE_STEP"} | extra
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, *launcher, "bench", *(["-m", model] if model else []), "-p", str(p), "-n", str(n),
               "--stats-json", out.name]
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return json.loads(Path(out.name).read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=["torch", "attn", "native"], choices=sorted(ARMS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for r in range(args.rounds):
        order = args.arms if r % 2 == 0 else args.arms[::-1]  # alternate, so drift hits every arm alike
        for arm in order:
            res = one_run(arm, args.model, args.p, args.n)
            runs[arm].append(res)
            print(f"round {r + 1} {arm:7s} decode {res['decode_tps']:8.2f} tok/s  outside native "
                  f"{res['outside_native_us_per_token']:9.0f} us/token", flush=True)
    summary = report(runs, args.arms[0])
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs}, indent=1))
    return 0


def report(runs: dict[str, list[dict]], base: str) -> dict:
    """Medians per arm, and the median of per-round decode ratios against `base` (each round's arms ran back to
    back, so a ratio within a round is less exposed to the machine's drift than a ratio of medians)."""
    med = {arm: {key: statistics.median(r[key] for r in rs) for key in ("decode_tps", "outside_native_us_per_token")}
           for arm, rs in runs.items()}
    for arm, rs in runs.items():
        ratios = [r["decode_tps"] / b["decode_tps"] for r, b in zip(rs, runs[base])]
        med[arm]["paired_ratios"], med[arm]["paired_ratio_median"] = ratios, statistics.median(ratios)
    print(f"\n{'arm':7s} {'decode tok/s':>13s} {'x ' + base + ' (paired, median)':>26s} "
          f"{'outside native us/token':>24s}  per-round ratios")
    for arm, m in med.items():
        print(f"{arm:7s} {m['decode_tps']:13.2f} {m['paired_ratio_median']:26.3f} "
              f"{m['outside_native_us_per_token']:24.0f}  {' '.join(f'{r:.3f}' for r in m['paired_ratios'])}")
    return med


if __name__ == "__main__":
    sys.exit(main())
