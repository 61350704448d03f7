"""How experts are streamed: budget, reader backend, queue depth, policy, pins, read verification. One frozen
dataclass, checked."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ConfigError
from ..telemetry.units import human_bytes  # noqa: F401 - re-exported for cache users

UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
         "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


def parse_bytes(text: str) -> int:
    """'8GiB', '512MiB', '1.5G', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise ConfigError(f"cannot read {text!r} as a size; write e.g. 8GiB, 512MiB or a number of bytes")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class CacheConfig:
    ram_budget: int | None = None  # bytes for expert buffers; None ("auto"): engine/sizing.py's auto_budget
    reader: str = "auto"  # "thread", "uring" or "auto"
    depth: int = 32  # reads in flight
    chunk_bytes: int = 4 << 20
    direct: bool = True  # O_DIRECT (falls back to buffered with a warning where refused)
    policy: str = "lru"
    pin: tuple[tuple[int, int], ...] = ()  # (layer, expert) kept for the whole run
    mmap: bool = False  # no cache: read experts through the memory map (for comparisons)
    prefetch: bool = False  # read ahead what the predictor expects the next layers to use
    predictor: str = "lookahead"  # lookahead, history or combined (prefetch/predictors.py)
    prefetch_depth: int = 1  # MoE layers ahead to predict
    prefetch_threshold: float | None = None  # least predicted chance (0..1) worth a read; None: the predictor's
    verify: bool = False  # check every re-read of an expert against its first read (cache/verify.py)
    repack: str = "auto"  # rewrite weights into the native kernels' packed layout: "auto", "on" or "off"

    def __post_init__(self):
        if self.ram_budget is not None and self.ram_budget <= 0:
            raise ConfigError("--ram-budget must be positive")
        if self.reader not in ("auto", "thread", "uring"):
            raise ConfigError(f"unknown reader {self.reader!r}; choose auto, thread or uring")
        if not 1 <= self.depth <= 256:
            raise ConfigError("--io-depth must be between 1 and 256")
        if self.chunk_bytes < 4096 or self.chunk_bytes % 4096:
            raise ConfigError("--io-chunk must be a positive multiple of 4 KiB")
        if self.predictor not in ("lookahead", "history", "combined"):
            raise ConfigError(f"unknown predictor {self.predictor!r}; choose lookahead, history or combined")
        if not 1 <= self.prefetch_depth <= 8:
            raise ConfigError("--prefetch-depth must be between 1 and 8")
        if self.prefetch_threshold is not None and not 0.0 <= self.prefetch_threshold <= 1.0:
            raise ConfigError("--prefetch-threshold must be between 0 and 1")
        if self.repack not in ("auto", "on", "off"):
            raise ConfigError(f"unknown --repack {self.repack!r}; choose auto, on or off")
        if self.verify and self.mmap:
            raise ConfigError("--verify-experts checks the cache's reads from the file, and --mmap makes none; "
                              "drop one of the two")


def available_memory() -> int:
    """Bytes this process could still use: MemAvailable, or less under a memory cgroup limit."""
    avail, limit = memory_facts()
    return min(avail, limit) if limit is not None else avail


def memory_facts() -> tuple[int, int | None]:
    """(MemAvailable, the memory cgroup's limit less its usage, or None without a limit), in bytes."""
    return _meminfo("MemAvailable"), _cgroup_room()


def cgroup_limit() -> int | None:
    """The memory cgroup's limit in bytes, or None."""
    for limit_file in ("memory.max", "memory.limit_in_bytes"):
        base = _cgroup_dir(limit_file)
        if base is not None:
            raw = open(os.path.join(base, limit_file)).read().strip()
            return None if raw == "max" or int(raw) >= 1 << 60 else int(raw)
    return None


def _meminfo(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _cgroup_room() -> int | None:
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        base = _cgroup_dir(limit_file)
        if base is None:
            continue
        raw = open(os.path.join(base, limit_file)).read().strip()
        if raw == "max" or int(raw) >= 1 << 60:
            return None
        return int(raw) - int(open(os.path.join(base, usage_file)).read())
    return None


def _cgroup_dir(limit_file: str) -> str | None:
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory"):
            if (controllers == "" or "memory" in controllers.split(",")) and \
                    os.path.exists(os.path.join(root + path, limit_file)):
                return root + path
    return None
