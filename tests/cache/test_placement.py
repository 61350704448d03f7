"""The GPU tier's placement rule and two-tier accounting, fed fixed costs (no GPU here)."""

from __future__ import annotations

import pytest

from moestream.cache.placement import COPY_UP, CPU, GPU, Costs, TierStats, VramBook, place, step

MB = 1 << 20
# a 24 GB/s link; the GPU runs an expert in 50 us + 2 us/row, the CPU in 2 ms + 1 ms/row
COSTS = Costs(pcie_Bps=24e9, copy_latency_s=10e-6, gpu_fixed_s=50e-6, gpu_per_row_s=2e-6, cpu_fixed_s=2e-3,
              cpu_per_row_s=1e-3)


def test_a_vram_hit_runs_on_the_gpu():
    assert place(True, 100 * MB, 1, COSTS) == GPU


def test_decode_of_a_cold_big_expert_stays_on_the_cpu_and_prefill_copies_it_up():
    # 100 MB: 4.4 ms to copy; one decode row costs the CPU 3 ms, 256 prefill rows 258 ms
    assert place(False, 100 * MB, 1, COSTS) == CPU
    assert place(False, 100 * MB, 256, COSTS) == COPY_UP


def test_expected_reuse_amortises_the_copy():
    assert place(False, 100 * MB, 1, COSTS, expected_uses=1) == CPU
    assert place(False, 100 * MB, 1, COSTS, expected_uses=4) == COPY_UP  # 1.1 ms per use + GPU < 3 ms


def test_a_slow_link_keeps_even_prefill_on_the_cpu():
    slow = Costs(pcie_Bps=0.2e9, copy_latency_s=1e-3, gpu_fixed_s=50e-6, gpu_per_row_s=2e-6, cpu_fixed_s=2e-3,
                 cpu_per_row_s=1e-3)
    assert place(False, 100 * MB, 256, slow) == CPU  # 525 ms to copy against 258 ms on the CPU


def test_vram_book_evicts_least_recent_within_its_budget():
    book = VramBook(budget_bytes=3 * 10 * MB + 5, slot_bytes=10 * MB)
    assert book.slots == 3
    assert [book.admit(k) for k in "abc"] == [[], [], []]
    book.touch("a")
    assert book.admit("d") == ["b"] and "b" not in book and book.used_bytes == 30 * MB
    assert book.admit("a") == [] and book.admit("e") == ["c"]
    assert VramBook(budget_bytes=5 * MB, slot_bytes=10 * MB).admit("x") == []  # no slot: nothing admitted


def test_two_tier_accounting_over_a_trace():
    book, ram, stats = VramBook(2 * 100 * MB, 100 * MB), set(), TierStats()
    trace = [("a", 256), ("a", 1), ("b", 1), ("b", 256), ("c", 256), ("a", 1), ("b", 1)]
    where = [step(book, ram, k, 100 * MB, rows, COSTS, stats) for k, rows in trace]
    # a: disk, prefill -> copied up; a: VRAM hit; b: disk, one row -> CPU (4.4 ms to copy > 3 ms);
    # b: RAM hit, prefill -> copied up; c: disk, prefill -> copied up, evicting a (least recent);
    # a: RAM hit, one row -> CPU; b: VRAM hit
    assert where == [COPY_UP, GPU, CPU, COPY_UP, COPY_UP, CPU, GPU]
    assert stats == TierStats(lookups=7, vram_hits=2, ram_hits=2, disk_reads=3, copies_up=3, cpu_computed=2,
                              bytes_copied=300 * MB, vram_evictions=1)
    assert ram == {"a", "b", "c"} and "a" not in book  # inclusive: evicted from VRAM, still in RAM


def test_bad_book():
    with pytest.raises(ValueError):
        VramBook(10, 0)
