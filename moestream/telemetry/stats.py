"""Latency samples with percentiles, and the process's memory as the kernel reports it.

Percentiles are nearest-rank, the one definition every p50/p95/p99 here uses: the p-th percentile of N sorted
values is the value at 1-based rank ceil(p/100 * N), so it is always a value that was observed (p95 of 1..100 is
95, p99 of one sample is that sample); p0 is the minimum and p100 the maximum. No interpolation: a tail latency
should be one a read really had."""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, field


@dataclass
class Samples:
    """A list of durations (seconds) or sizes; percentiles by nearest rank. Kept whole: runs are short."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def total(self) -> float:
        return float(sum(self.values))

    def pct(self, q: float) -> float:
        """The q-th percentile (0 <= q <= 100) by nearest rank; 0.0 when there are no samples."""
        return nearest_rank(self.values, q)

    def summary(self, scale: float = 1.0) -> dict:
        """{'p50','p95','p99'} scaled (e.g. 1e3 for ms)."""
        return {f"p{q}": self.pct(q) * scale for q in (50, 95, 99)}


def nearest_rank(values, q: float) -> float:
    """Value at 1-based rank ceil(q/100 * N) of the sorted values; q=0 gives the minimum. 0.0 for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, got {q}")
    if not values:
        return 0.0
    ordered = sorted(values)
    # round() first: q/100 * N in floating point can land a hair above an integer (ceil would then skip a rank)
    rank = math.ceil(round(q * len(ordered) / 100, 9))
    return float(ordered[max(rank, 1) - 1])


def peak_rss_bytes() -> int:
    """Peak resident set of this process image: VmHWM. (getrusage's ru_maxrss is not used: Linux carries it over
    exec from the forked parent, so a child of a large process reports the parent's size.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """Current resident set, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()
