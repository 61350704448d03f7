"""Speculative decoding (--draft ngram, or --draft-model FILE) off vs on, in one process on one loaded model per arm, interleaved prompt by
prompt: decode tokens/s, the share of drafted tokens kept, and whether the greedy output is identical (it must be).

    PYTHONPATH=. python bench/speculative.py [-m FILE.gguf] [-n 64] [--rounds 2] [--ram-budget 2GiB] [--json out]

Prompts: two whose answers repeat their context (a code edit that returns the code, a summary quoting its source)
and two that repeat nothing (a poem, a list of facts), through the model's chat template. Without -m: the embedded
default model. Both engines are open at once (each with its own cache: --ram-budget applies to each), and the arms
alternate per prompt and round, so drift on this machine falls on both."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from moestream.engine import GREEDY, CacheConfig, Engine, EngineConfig, parse_bytes
from moestream.assets import default_model_path

CODE = '''def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    tax = subtotal * tax_rate
    return subtotal + tax
'''
SOURCE = ("The committee met on Tuesday. It agreed that the bridge would close for repairs in March. "
          "Traffic will be diverted through the north road. The work is expected to take six weeks.")
PROMPTS = {
    "code edit (repeats)": f"Rename the variable subtotal to net in this code and show the whole code:\n{CODE}",
    "quote summary (repeats)": f"Summarise this text, quoting its sentences word for word:\n{SOURCE}",
    "poem (no repeat)": "Write a short poem about the sea at night.",
    "facts (no repeat)": "List five facts about volcanoes.",
}


def run(engine: Engine, prompt: list[int], n: int) -> tuple[list[int], float]:
    t0, tokens = None, []
    for event in engine.generate(prompt, GREEDY, n):
        if t0 is None:
            t0 = time.perf_counter()  # decode only: from the first token on
        tokens.append(event.token)
    return tokens, (len(tokens) - 1) / (time.perf_counter() - t0) if len(tokens) > 1 else 0.0


def cache_counts(engine: Engine) -> list[int]:
    s = engine.cache.stats if engine.cache is not None else None
    return [s.hits, s.lookups, s.bytes_read] if s else [0, 0, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=str(default_model_path()))
    ap.add_argument("-n", "--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ram-budget", default=None, help="expert cache budget per engine (streaming regime)")
    ap.add_argument("--draft-model", default=None, help="compare a draft model (same vocabulary) instead of ngram")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    spec = "model" if args.draft_model else "ngram"
    cache = CacheConfig(ram_budget=parse_bytes(args.ram_budget)) if args.ram_budget else CacheConfig()
    engines = {d: Engine.open(args.model, EngineConfig(cache=cache, progress=False, draft=d,
                                                       draft_model=args.draft_model if d == "model" else None))
               for d in ("off", spec)}
    rows = []
    for name, text in PROMPTS.items():
        prompt = engines["off"].encode_chat([{"role": "user", "content": text}])
        tps, outputs, kept = {"off": [], spec: []}, {}, []
        hits = {"off": [0, 0, 0], spec: [0, 0, 0]}  # hits, lookups, bytes read (of the timed runs)
        for r in range(args.rounds):
            for arm in (("off", spec) if r % 2 == 0 else (spec, "off")):
                sched = engines[arm].scheduler
                before = (sched.drafted, sched.accepted)
                cache0 = cache_counts(engines[arm])
                tokens, rate = run(engines[arm], prompt, args.tokens)
                hits[arm] = [a + b - c for a, b, c in zip(hits[arm], cache_counts(engines[arm]), cache0)]
                tps[arm].append(rate)
                outputs.setdefault(arm, tokens)
                if arm == spec:
                    drafted, accepted = sched.drafted - before[0], sched.accepted - before[1]
                    kept.append((accepted, drafted))
        accepted, drafted = sum(a for a, _ in kept), sum(d for _, d in kept)
        row = {"prompt": name, "tps_off": statistics.median(tps["off"]), f"tps_{spec}": statistics.median(tps[spec]),
               "drafted": drafted, "accepted": accepted, "acceptance": accepted / drafted if drafted else 0.0,
               "identical": outputs["off"] == outputs[spec], "rounds_off": tps["off"], f"rounds_{spec}": tps[spec],
               **{f"hit_rate_{arm}": h / n if n else 0.0 for arm, (h, n, _) in hits.items()},
               **{f"bytes_read_{arm}": b for arm, (_, _, b) in hits.items()}}
        row["speedup"] = row[f"tps_{spec}"] / row["tps_off"] if row["tps_off"] else 0.0
        rows.append(row)
        print(f"{name:<26} off {row['tps_off']:7.2f} tok/s  {spec} {row[f'tps_{spec}']:7.2f} tok/s  "
              f"x{row['speedup']:.2f}  kept {accepted}/{drafted} ({100 * row['acceptance']:.0f}%)  "
              f"identical {row['identical']}  hit rate off {100 * row['hit_rate_off']:.0f}% {spec} "
              f"{100 * row[f'hit_rate_{spec}']:.0f}%, read off {row['bytes_read_off'] / 2**20:.0f} MiB {spec} "
              f"{row[f'bytes_read_{spec}'] / 2**20:.0f} MiB", flush=True)
    for engine in engines.values():
        engine.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "tokens": args.tokens, "ram_budget": args.ram_budget, "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
