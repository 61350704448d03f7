"""The RAM pool's background warming (cache/tiers.py): the budget's slots are made and faulted in off the decode
thread, handed out before any new one is made, never beyond the budget, and the thread stops on close."""

from __future__ import annotations

import resource
import time

from moestream.cache.tiers import RamPool

SLOT = 4 << 20


def _wait_warm(pool: RamPool, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while pool.allocated_bytes < pool.capacity_bytes and time.monotonic() < deadline:
        time.sleep(0.01)


def _rss_pages() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


def test_warming_makes_every_slot_within_the_budget_and_faults_it_in():
    pool = RamPool(budget=10 * SLOT + SLOT // 2, slot_size=SLOT, max_slots=100)
    before = _rss_pages()
    pool.start_warming()
    _wait_warm(pool)
    pool.stop_warming()
    assert pool.n_slots == 10 and pool.allocated_bytes == 10 * SLOT <= pool.budget
    page = resource.getpagesize()
    assert (_rss_pages() - before) * page >= 9 * SLOT  # resident already, not only mapped
    slots = [pool.take() for _ in range(10)]
    assert len({s.index for s in slots}) == 10 and pool.take() is None  # warmed ones first, then none
    slots[0].tensor[:] = 7  # writable
    pool.give(slots[0])
    assert pool.take() is slots[0] and pool.free_count == 0


def test_take_does_not_wait_for_the_warming_thread():
    pool = RamPool(budget=64 * SLOT, slot_size=SLOT, max_slots=64)
    pool.start_warming()
    taken = [pool.take() for _ in range(64)]  # races the warmer: every slot exactly once, whoever made it
    pool.stop_warming()
    assert all(s is not None for s in taken) and len({s.index for s in taken}) == 64
    assert pool.take() is None and pool.allocated_bytes == 64 * SLOT


def test_stop_ends_the_thread_early():
    pool = RamPool(budget=200 * SLOT, slot_size=SLOT, max_slots=200)
    pool.start_warming()
    pool.stop_warming()
    assert not pool._warmer.is_alive() and pool.allocated_bytes <= pool.capacity_bytes
