"""Offline cache studies on routing traces: budgets in the user's units, and hit rates per policy and budget."""

from __future__ import annotations

import re

from ..cache.belady import belady
from ..cache.config import parse_bytes
from ..cache.policy import make_policy
from ..cache.simulate import simulate
from ..errors import ConfigError
from .trace import Trace

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
