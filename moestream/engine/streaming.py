"""Build the expert source a model streams from: the byte-budgeted cache over an aligned reader (default), or the
memory map (`CacheConfig(mmap=True)`, for comparisons)."""

from __future__ import annotations

import functools
import sys
import warnings

from ..cache.config import CacheConfig, available_memory, human_bytes, memory_facts
from ..cache.expert_cache import ExpertCache
from ..cache.layout import SlotLayout
from ..errors import ConfigError
from ..cache.policy import make_policy
from ..store.experts import ExpertStore
from ..store import uring
from ..store.reader import Reader, ThreadReader, open_file
from ..telemetry import rss_bytes
from .sizing import OS_RESERVE, RUNTIME_BYTES, Machine, ModelSize, auto_budget, minimum_budget

AUTO_READER = "uring"  # measured: see docs/benchmarks.md (reader backends)


def open_reader(path, config: CacheConfig) -> Reader:
    """path: the GGUF, or the list of its shards. The configured backend; `auto` takes io_uring where this process may use it (seccomp profiles, old
    kernels and container runtimes refuse io_uring_setup) and the thread reader otherwise, saying so once."""
    file = open_file(path, direct=config.direct)
    try:
        if config.reader == "uring":
            return uring.UringReader(file, config.depth)
        if config.reader == "auto" and AUTO_READER == "uring" and uring.available():
            try:
                return uring.UringReader(file, config.depth)
            except uring.UringRefused as exc:
                _notice_once(f"moestream: io_uring is refused here ({exc.reason}); reading with threads instead")
        return ThreadReader(file, config.depth)
    except BaseException:
        file.close()  # no descriptor outlives a refused reader
        raise


@functools.cache
def _notice_once(text: str) -> None:
    """Print a notice to stderr the first time it comes up in this process (it would repeat on every open)."""
    print(text, file=sys.stderr)


def open_cache(path, store: ExpertStore, n_used: int, config: CacheConfig, reader: Reader | None = None,
               kv_reserve: int = 0, n_owned: int | None = None) -> ExpertCache:
    """kv_reserve: bytes the KV caches will take at full context, kept out of an automatic budget. n_owned: the
    experts this rank owns (expert sharding): an automatic budget needs room for those only."""
    budget = config.ram_budget or automatic_budget(store, n_used, kv_reserve, n_owned)
    room = available_memory()  # measured after the resident weights were loaded
    if config.ram_budget and config.ram_budget > room:
        warnings.warn(f"--ram-budget {human_bytes(config.ram_budget)} is more than the {human_bytes(max(room, 0))} "
                      f"this machine (or memory cgroup) has free after the resident weights; expect swapping or "
                      f"the OOM killer", RuntimeWarning, stacklevel=2)
    reader = reader or open_reader(path, config)
    try:
        cache = ExpertCache(store, reader, budget, n_used, make_policy(config.policy), config.chunk_bytes,
                            verify=config.verify)
    except BaseException:
        reader.close()  # no reader thread outlives a refused configuration
        raise
    try:
        if config.pin:
            cache.pin(list(config.pin), n_used)
    except BaseException:
        cache.close()
        raise
    cache.pool.start_warming()  # the budget's slots, faulted in off the decode thread (cache/tiers.py)
    return cache


def automatic_budget(store: ExpertStore, n_used: int, kv_reserve: int, n_owned: int | None = None) -> int:
    """`--ram-budget auto`: every expert if they fit, else what sizing.auto_budget leaves (the resident weights
    are loaded already, so the free memory measured now has paid for them). Too little is refused with the
    numbers."""
    slot = SlotLayout(store).slot_size
    size = ModelSize(0, n_owned or store.n_total, slot, n_used, kv_bytes_per_token=kv_reserve)  # KV: one "token"
    free, cgroup_room = memory_facts()
    budget = auto_budget(size, Machine(free, cgroup_room, rss_bytes()), context=1, sequences=1)
    if budget < minimum_budget(size):
        raise ConfigError(f"this machine has {human_bytes(Machine(free, cgroup_room).room)} free after the resident "
                          f"weights; the KV cache needs {human_bytes(kv_reserve)}, the runtime "
                          f"{human_bytes(RUNTIME_BYTES)} and the OS {human_bytes(OS_RESERVE)}, which leaves less than "
                          f"one token's {n_used} experts ({human_bytes(minimum_budget(size))}): free memory, lower "
                          f"-c or --max-batch, or set --ram-budget")
    if budget < size.expert_slots * slot:
        print(f"moestream: experts ({human_bytes(store.total_nbytes())}) exceed free memory; streaming them with a "
              f"{human_bytes(budget)} cache (set --ram-budget to choose; `moestream plan` explains)", file=sys.stderr)
    return budget
