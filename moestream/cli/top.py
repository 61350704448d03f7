"""`moestream top`: a live terminal dashboard of a running `moestream serve`, from its Prometheus /metrics
(tokens/s, running and queued requests, expert cache hit rates overall and per layer, read throughput, read and
step latency percentiles, memory). It only reads /metrics, so it can watch any server it can reach, and keeps
polling through a server restart. The flags are checked here, before the UI starts: a bad one is a one-line error.
textual is imported only when the dashboard runs, so other commands do not pay for it (~0.2 s)."""

from __future__ import annotations

import argparse
import math

from ..errors import ConfigError
from .top_model import metrics_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live dashboard of a running `moestream serve` (reads its /metrics)")
    p.add_argument("--url", default="http://127.0.0.1:8000",
                   help="the server, as http(s)://HOST:PORT (its /v1 or /metrics also do; default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between refreshes (default %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    url = metrics_url(args.url)
    if not (args.interval > 0 and math.isfinite(args.interval)):
        raise ConfigError(f"--interval must be a number of seconds above 0, got {args.interval:g}")
    from .top_app import TopApp

    TopApp(url, args.interval).run()
    return 0
