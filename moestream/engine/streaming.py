"""Build the expert source a model streams from: the byte-budgeted cache over an aligned reader (default), or the
memory map (`CacheConfig(mmap=True)`, for comparisons)."""

from __future__ import annotations

import functools
import sys
import warnings

from ..cache.config import HEADROOM, CacheConfig, available_memory, human_bytes
from ..cache.expert_cache import ExpertCache
from ..cache.policy import make_policy
from ..store.experts import ExpertStore
from ..store import uring
from ..store.reader import Reader, ThreadReader, open_file

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


def open_cache(path, store: ExpertStore, n_used: int, config: CacheConfig,
               reader: Reader | None = None) -> ExpertCache:
    budget = config.ram_budget or auto_budget(store)
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


def auto_budget(store: ExpertStore) -> int:
    """Everything if it fits, else what is free (the resident weights are loaded already) less some headroom."""
    room = available_memory() - HEADROOM
    total = store.total_nbytes() + store.n_total * 3 * 8192  # + alignment padding
    if room >= total:
        return total
    print(f"moestream: experts ({total / 2**30:.2f} GiB) exceed free memory; streaming them with a "
          f"{max(room, 0) / 2**30:.2f} GiB cache (set --ram-budget to choose)", file=sys.stderr)
    return max(room, 1)
