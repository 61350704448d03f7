"""Aggregate decode tokens/s and disk bytes read per generated token of `moestream serve` at 1, 4 and 16
concurrent streams, with an expert budget below the model's expert bytes (so experts are streamed), in one run.

Each level sends N streaming /v1/completions requests at once (different random prompts, temperature 1, seeded)
and waits for all. Decode tokens/s = tokens after each stream's first / (last finish - first first-token).
Bytes per token come from the server's own /metrics (moestream_cache_bytes_read / generated tokens).

    PYTHONPATH=. python bench/serve_concurrency.py FILE.gguf --ram-budget 1.5GiB [--levels 1 4 16] [--tokens 32]
        [--policies lru layer] [--rounds 2] [--json out.json]

One server per cache policy, all started up front; rounds interleave policies and levels so that each sees
the same drift of this VM's disk.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.conftest import start_server  # noqa: E402


def scrape(url: str) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def one_stream(client, model: str, prompt: list[int], tokens: int, seed: int) -> tuple[float, float, int]:
    """(time of the first token, time of the end, tokens received)."""
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=tokens, temperature=1.0, seed=seed,
                                       stream=True, stream_options={"include_usage": True})
    first, n = None, 0
    for chunk in stream:
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
        elif first is None:
            first = time.perf_counter()
    return first, time.perf_counter(), n


def level(client, url: str, model: str, n: int, tokens: int, prompt_tokens: int, vocab: int, rng) -> dict:
    prompts = [[rng.randrange(3, vocab) for _ in range(prompt_tokens)] for _ in range(n)]
    before = scrape(url)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: one_stream(client, model, prompts[i], tokens, 1000 + i), range(n)))
    wall = time.perf_counter() - t0
    after = scrape(url)
    generated = sum(r[2] for r in results)
    decode_tokens = generated - n
    decode_s = max(r[1] for r in results) - min(r[0] for r in results)
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    return {"streams": n, "generated": generated, "wall_s": wall, "decode_tps": decode_tokens / decode_s,
            "bytes_per_token": d["moestream_cache_bytes_read_total"] / max(1, d["moestream_generated_tokens_total"]),
            "hit_rate": d["moestream_cache_hits_total"] / max(1, d["moestream_cache_lookups_total"]),
            "steps": d["moestream_step_latency_seconds_count"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ram-budget", required=True)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--policies", nargs="+", default=["lru"], choices=["lru", "layer"])
    ap.add_argument("--json")
    args = ap.parse_args()
    from openai import OpenAI

    from moestream.formats.gguf import GGUFFile

    vocab = len(GGUFFile(args.model).get("tokenizer.ggml.tokens"))
    servers = {p: start_server("-m", args.model, "--ram-budget", args.ram_budget, "--cache-policy", p,
                               "--max-batch", str(max(args.levels)), timeout=600) for p in args.policies}
    rows = []
    try:
        clients = {p: OpenAI(base_url=s.base_url, api_key="none", max_retries=0, timeout=3600)
                   for p, s in servers.items()}
        model = next(iter(clients.values())).models.list().data[0].id
        rng = random.Random(0)
        for rnd in range(args.rounds):
            for n in args.levels:  # interleaved: every level and policy sees the same drift
                for p, client in clients.items():
                    r = level(client, servers[p].url, model, n, args.tokens, args.prompt_tokens, vocab, rng)
                    rows.append({"round": rnd, "policy": p, **r})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        for s in servers.values():
            s.stop()
    print(f"\n{'policy':>6} {'streams':>7} {'decode tok/s':>12} {'MB read/token':>13} {'hit rate':>8}")
    for p in args.policies:
        for n in args.levels:
            mine = [r for r in rows if r["streams"] == n and r["policy"] == p]
            print(f"{p:>6} {n:>7} {statistics.median(r['decode_tps'] for r in mine):>12.2f} "
                  f"{statistics.median(r['bytes_per_token'] for r in mine) / 1e6:>13.1f} "
                  f"{statistics.median(r['hit_rate'] for r in mine):>8.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
