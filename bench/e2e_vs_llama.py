"""End-to-end prefill and decode speed, moestream against llama.cpp's llama-bench, on the same GGUF and thread
count, measured in one run with the two engines interleaved (these VMs are noisy), reported as ratios.

moestream: `moestream bench -m FILE -p P -n N -t T` (random prompt ids, sampling at temperature 1 with a fixed
seed; every expert stays in RAM after warm-up for a file that fits). llama.cpp: `llama-bench -m FILE -p P -n N
-t T -r 1 -o json` (its defaults otherwise, so Q4_0 weights are repacked as users get them).

Reproduce:
    moestream synth --preset mixtral-8x7b --layers 8 -o /root/cache/bench/mixtral-shapes-8l-q4_0.gguf \\
        --vocab ~/.cache/moestream-tests/llama.cpp/models/ggml-vocab-llama-spm.gguf
    moestream synth --preset qwen3-30b-a3b -o /root/cache/bench/qwen3-30b-a3b-q4_0.gguf
    python bench/e2e_vs_llama.py -m /root/cache/bench/mixtral-shapes-8l-q4_0.gguf \
        /root/cache/bench/qwen3-30b-a3b-q4_0.gguf --llama-bin /root/cache/llama-build/bin

Several files are measured one after the other, each with its own interleaved rounds. The summary also gives the
share of moestream's decode step spent outside native code (torch, Python, waiting on reads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_ours(model: str, p: int, n: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "moestream", "bench", "-m", model, "-p", str(p), "-n", str(n),
               "-t", str(threads), "--json", out.name]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
        r = json.load(open(out.name))
    return {"prefill_tps": r["prefill_tps"], "decode_tps": r["decode_tps"],
            "outside_native_us_per_token": r["outside_native_us_per_token"]}


def run_llama(bin_dir: str, model: str, p: int, n: int, threads: int) -> dict:
    cmd = [os.path.join(bin_dir, "llama-bench"), "-m", model, "-p", str(p), "-n", str(n), "-t", str(threads),
           "-r", "1", "-o", "json"]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600).stdout)
    by_test = {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in rows}
    return {"prefill_tps": by_test["prefill"], "decode_tps": by_test["decode"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True, nargs="+", help="one or more GGUF files")
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_CPP_BIN", "/root/cache/llama-build/bin"))
    ap.add_argument("-p", "--prompt-tokens", type=int, default=512)
    ap.add_argument("-n", "--decode-tokens", type=int, default=32)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default="/root/cache/bench/e2e_vs_llama.json")
    args = ap.parse_args()
    results = [measure_model(model, args) for model in args.model]
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)


def measure_model(model: str, args: argparse.Namespace) -> dict:
    ours, theirs = [], []
    for i in range(args.rounds):
        ours.append(run_ours(model, args.prompt_tokens, args.decode_tokens, args.threads))
        theirs.append(run_llama(args.llama_bin, model, args.prompt_tokens, args.decode_tokens, args.threads))
        print(f"{os.path.basename(model)} round {i + 1}: moestream {ours[-1]}, llama.cpp {theirs[-1]}", flush=True)
    summary = summarise(ours, theirs)
    summary.update(vars(args), model=model, date=time.strftime("%Y-%m-%d"), rounds_ours=ours, rounds_llama=theirs)
    print(os.path.basename(model))
    print_summary(summary)
    return summary


def summarise(ours: list[dict], theirs: list[dict]) -> dict:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    out = {}
    for key in ("prefill_tps", "decode_tps"):
        out[key] = {"moestream": med(ours, key), "llama.cpp": med(theirs, key)}
        out[key]["ratio"] = out[key]["moestream"] / out[key]["llama.cpp"]
    out["outside_native_us_per_token"] = med(ours, "outside_native_us_per_token")
    return out


def print_summary(s: dict) -> None:
    print(f"{'':<9} {'moestream':>10} {'llama.cpp':>10} {'ratio':>7}")
    for key, label in (("prefill_tps", f"pp{s['prompt_tokens']}"), ("decode_tps", f"tg{s['decode_tokens']}")):
        r = s[key]
        print(f"{label:<9} {r['moestream']:10.2f} {r['llama.cpp']:10.2f} {r['ratio']:7.2f}")
    step_us = 1e6 / s["decode_tps"]["moestream"]
    outside = s["outside_native_us_per_token"]
    print(f"moestream time outside native kernels: {outside:.0f} us per decoded token "
          f"({100 * outside / step_us:.1f} % of the decode step)")


if __name__ == "__main__":
    main()
