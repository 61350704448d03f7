"""`moestream simulate`: replay a routing trace against cache policies and budgets, with Belady's MIN as the
upper bound; prints hit rates as a table, optionally plots hit rate against budget. With `--prefetch`, also
replays a predictor's read-ahead with each policy: its precision and recall, hit rates, and reads per lookup
(the bytes it costs, comparable with a demand cache's miss rate)."""

from __future__ import annotations

import argparse
import sys

from ..engine import POLICY_NAMES, PrefetchSpec, budget_slots, hit_rates, prefetch_rates, read_trace
from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="replay a routing trace against cache policies and budgets (offline)")
    p.add_argument("trace", help="a file written by `moestream trace`")
    p.add_argument("--budget", nargs="+", default=["25%", "50%", "75%"], metavar="B",
                   help="budgets: a share of all experts (25%%), a number of experts (40), or bytes (2GiB) "
                        "(default: 25%% 50%% 75%%)")
    p.add_argument("--policy", nargs="+", default=list(POLICY_NAMES), choices=POLICY_NAMES,
                   help="policies to replay (default: all; belady is the offline optimum)")
    p.add_argument("--prefetch", nargs="+", default=[], metavar="SPEC",
                   help="also replay prefetch: PREDICTOR:DEPTH:THRESHOLD, e.g. lookahead:1:0 combined:2:0.3 "
                        "(lookahead needs a trace recorded with --ahead DEPTH)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw hit rate against budget, one line per policy")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    specs = [PrefetchSpec.parse(text) for text in args.prefetch]
    trace = read_trace(args.trace)
    slots = [budget_slots(b, trace.header) for b in args.budget]
    table = hit_rates(trace, slots, args.policy)
    total = trace.header["n_layers"] * trace.header["n_experts"]
    print(f"{trace.header['model']}: {len(trace.records)} layer steps, {total} experts, top-{trace.header['k']}")
    labels = _labels(args.budget, slots)
    width = max(len(label) for label in [*labels, "budget"])
    print(f"{'budget':>{width}} " + " ".join(f"{p:>9}" for p in args.policy))
    for label, n in zip(labels, slots):
        print(f"{label:>{width}} " + " ".join(f"{table[p][n]:>9.1%}" for p in args.policy))
    for spec in specs:
        _print_prefetch(trace, args, slots, spec)
    if args.plot:
        _plot(trace, args.policy, args.plot, total)
    return 0


def _print_prefetch(trace, args: argparse.Namespace, slots: list[int], spec: PrefetchSpec) -> None:
    table, quality = prefetch_rates(trace, slots, args.policy, spec)
    print(f"\nprefetch {spec}: precision {quality.precision:.1%}, recall {quality.recall:.1%}; "
          f"hit rate / reads per lookup")
    labels = _labels(args.budget, slots)
    width = max(len(label) for label in [*labels, "budget"])
    print(f"{'budget':>{width}} " + " ".join(f"{p:>15}" for p in table))
    for label, n in zip(labels, slots):
        cells = [f"{table[p][n].hit_rate:.1%} / {table[p][n].read_rate:.1%}" for p in table]
        print(f"{label:>{width}} " + " ".join(f"{c:>15}" for c in cells))


def _labels(budgets: list[str], slots: list[int]) -> list[str]:
    return [f"{budget} ({n} experts)" for budget, n in zip(budgets, slots)]


def _plot(trace, policies: list[str], path: str, total: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib (pip install matplotlib)") from None
    k = trace.header["k"]
    slots = sorted({max(k, round(total * f / 20)) for f in range(1, 21)})
    table = hit_rates(trace, slots, policies)
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in policies:
        ax.plot([100 * s / total for s in slots], [100 * table[p][s] for s in slots], marker=".", label=p)
    ax.set(xlabel="budget (% of expert bytes)", ylabel="hit rate (%)", title=trace.header["model"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"moestream: wrote {path}", file=sys.stderr)
