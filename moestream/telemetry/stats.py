"""Latency samples with percentiles, and the process's memory as the kernel reports it."""

from __future__ import annotations

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
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return float(ordered[rank])

    def summary(self, scale: float = 1.0) -> dict:
        """{'p50','p95','p99'} scaled (e.g. 1e3 for ms)."""
        return {f"p{q}": self.pct(q) * scale for q in (50, 95, 99)}


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
