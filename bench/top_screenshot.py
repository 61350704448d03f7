"""docs/top.svg: a screenshot of `moestream top` watching a real `moestream serve` (the embedded model, a 4 MiB
expert budget, two thirds of its experts, so that experts stream and layers differ in hit rate; batches of 2
with 4 clients, so 2 queue).

    PYTHONPATH=. python bench/top_screenshot.py [--out docs/top.svg] [--seconds 3] [--ram-budget 4MiB]

The dashboard runs headless (textual's run_test) at 100x30 and polls every 0.5 s while the clients stream; the
SVG is saved after --seconds of load, so the "last interval" numbers are live ones."""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moestream.cli.top_app import TopApp  # noqa: E402
from moestream.cli.top_model import metrics_url  # noqa: E402
from tests.server.conftest import start_server  # noqa: E402
from tests.server.test_api import MODEL, PROMPTS  # noqa: E402


def clients(base_url: str, stop: threading.Event, n: int = 4) -> list[threading.Thread]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30)

    def stream(prompt: str) -> None:
        while not stop.is_set():
            for _ in client.completions.create(model=MODEL, prompt=prompt, max_tokens=150, stream=True):
                if stop.is_set():
                    break

    threads = [threading.Thread(target=stream, args=(p,), daemon=True) for p in PROMPTS[:n]]
    for t in threads:
        t.start()
    return threads


async def shoot(url: str, out: Path, seconds: float) -> None:
    app = TopApp(url, interval=0.5)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(seconds)
        out.write_text(app.export_screenshot(title="moestream top"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/top.svg"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--ram-budget", default="4MiB")
    args = ap.parse_args()
    server = start_server("--ram-budget", args.ram_budget, "--max-batch", "2")
    stop = threading.Event()
    try:
        threads = clients(server.base_url, stop)
        asyncio.run(shoot(metrics_url(server.url), args.out, args.seconds))
    finally:
        stop.set()
        server.stop()
    for t in threads:
        t.join(timeout=30)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
