"""Offline cache studies on routing traces: budgets in the user's units, hit rates per policy and budget, and
the same with a predictor's prefetches replayed (its precision and recall too)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..cache.belady import belady
from ..cache.config import parse_bytes
from ..cache.policy import make_policy
from ..cache.simulate import simulate, simulate_prefetch
from ..errors import ConfigError
from ..prefetch.predictors import PREDICTORS, choose, make_predictor
from .trace import Trace, iter_steps

POLICY_NAMES = ("lru", "lfu", "layer", "layer-lfu", "belady")


def budget_slots(text: str, header: dict) -> int:
    """'25%' of all experts, '40' experts, or bytes ('2GiB', divided by the cache's slot size) -> slots."""
    total = header["n_layers"] * header["n_experts"]
    if m := re.fullmatch(r"\s*([0-9.]+)\s*%\s*", text):
        n = round(total * float(m.group(1)) / 100)
    elif text.strip().isdigit():
        n = int(text)
    else:
        n = parse_bytes(text) // header["slot_bytes"]
    if n < header["k"]:
        raise ConfigError(f"budget {text} holds {n} experts; one layer's top-{header['k']} needs at least {header['k']}")
    return min(n, total)


def hit_rates(trace: Trace, slots: list[int], policies: list[str]) -> dict[str, dict[int, float]]:
    acquires = trace.acquires()
    out: dict[str, dict[int, float]] = {}
    for p in policies:
        run = (lambda n: belady(acquires, n)) if p == "belady" else (lambda n: simulate(acquires, n, make_policy(p)))
        out[p] = {n: run(n).hit_rate for n in slots}
    return out


@dataclass(frozen=True)
class PrefetchSpec:
    """PREDICTOR:DEPTH:THRESHOLD, as `moestream simulate --prefetch` takes it."""

    predictor: str
    depth: int
    threshold: float

    @classmethod
    def parse(cls, text: str) -> "PrefetchSpec":
        parts = text.split(":")
        try:
            spec = cls(parts[0], int(parts[1]), float(parts[2])) if len(parts) == 3 else None
        except ValueError:
            spec = None
        if spec is None or spec.predictor not in PREDICTORS or not 1 <= spec.depth <= 8 \
                or not 0 <= spec.threshold <= 1:
            raise ConfigError(f"--prefetch {text!r}: write PREDICTOR:DEPTH:THRESHOLD with PREDICTOR one of "
                              f"{', '.join(PREDICTORS)}, DEPTH 1-8 and THRESHOLD 0-1, e.g. lookahead:2:0.3")
        return spec

    def __str__(self) -> str:
        return f"{self.predictor}:{self.depth}:{self.threshold:g}"


@dataclass
class Quality:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def prefetch_plan(trace: Trace, spec: PrefetchSpec) -> tuple[list[list[tuple[int, list[int]]]], dict[int, Quality]]:
    """Run the predictor over the trace as the live prefetcher would: per acquire, what it reads ahead (nearest
    target first), and per target layer how well those predictions match its acquires in the same step (the
    live cache's `predicted` counts)."""
    h = trace.header
    if spec.predictor != "history" and h.get("ahead", 0) < spec.depth:
        raise ConfigError(f"{spec}: the trace holds router lookahead for {h.get('ahead', 0)} layer(s); record it "
                          f"with `moestream trace --ahead {spec.depth}` (or use the history predictor)")
    predictor = make_predictor(spec.predictor, h["n_layers"], h["n_experts"], h["k"], spec.depth)
    layers = sorted({r["layer"] for r in trace.records})
    plan, quality = [], {layer: Quality() for layer in layers}
    for step in iter_steps(trace):
        used = {r["layer"]: {e for row in r["experts"] for e in row} for r in step}
        named: dict[int, set[int]] = {}  # target -> every expert predicted for it this step (as the cache scores)
        for r in step:
            pos = layers.index(r["layer"])
            targets = layers[pos + 1:pos + 1 + spec.depth]
            ahead = {int(t): torch.tensor(p) for t, p in r.get("ahead", {}).items()}
            scores = predictor.predict(r["layer"], sorted(used[r["layer"]]), ahead, targets)
            chosen = [(t, choose(scores[t], spec.threshold, h["n_experts"])) for t in targets if t in scores]
            plan.append(chosen)
            for t, experts in chosen:
                named.setdefault(t, set()).update(experts)
        for t, experts in named.items():
            actual, q = used.get(t, set()), quality[t]
            q.tp, q.fp, q.fn = q.tp + len(actual & experts), q.fp + len(experts - actual), q.fn + len(actual - experts)
    return plan, {t: q for t, q in quality.items() if q.tp + q.fp + q.fn}


def overall(quality: dict[int, Quality]) -> Quality:
    return Quality(*(sum(getattr(q, f) for q in quality.values()) for f in ("tp", "fp", "fn")))


def prefetch_rates(trace: Trace, slots: list[int], policies: list[str], spec: PrefetchSpec):
    """{policy: {slots: PrefetchResult}} for the policies with `spec`'s prefetch, and the predictor's quality."""
    acquires = trace.acquires()
    plan, quality = prefetch_plan(trace, spec)
    out = {p: {n: simulate_prefetch(acquires, plan, n, make_policy(p)) for n in slots}
           for p in policies if p != "belady"}
    return out, overall(quality)
