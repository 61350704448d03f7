"""Time to first token with and without the prompt cache (issue 16): a server with `--prompt-cache`, requests whose
prompts share a long prefix (an agent resending its system prompt and history), measured as the OpenAI client
sees it (streamed completion, time to the first text chunk).

Each round uses a fresh random prefix: the first request on it computes the whole prompt (uncached), the second,
the same prefix with another ending, restores it (cached). Rounds alternate, so both arms see the same machine
state; the ratio per round is reported.

    PYTHONPATH=. python bench/prompt_cache_ttft.py -m FILE [--prefix 1000] [--rounds 3] [--budget 2GiB]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.conftest import start_server  # noqa: E402


def ttft(client, model: str, prompt: list[int]) -> tuple[float, int]:
    """(seconds to the first streamed text, cached prompt tokens reported)."""
    t0 = time.perf_counter()
    first, cached = None, 0
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    for part in stream:
        if first is None and part.choices:
            first = time.perf_counter() - t0
        if part.usage is not None:
            cached = part.usage.prompt_tokens_details.cached_tokens
    return first, cached


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--prefix", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", default="2GiB")
    args = ap.parse_args()
    server = start_server("-m", args.model, "--prompt-cache", args.budget, "-c", str(args.prefix + 64),
                          timeout=600)
    try:
        from openai import OpenAI
        client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        rng = random.Random(0)
        print("| round | uncached TTFT s | cached TTFT s | cached tokens | ratio |")
        print("|---|---|---|---|---|")
        ratios = []
        for r in range(args.rounds):
            prefix = [rng.randrange(100, 20000) for _ in range(args.prefix)]
            cold, _ = ttft(client, model, prefix + [5, 6])
            warm, cached = ttft(client, model, prefix + [7, 8, 9])
            ratios.append(cold / warm)
            print(f"| {r} | {cold:.3f} | {warm:.3f} | {cached} | **{cold / warm:.1f}x** |", flush=True)
        print(f"median ratio {statistics.median(ratios):.1f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
