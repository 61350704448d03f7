"""Prefetch: it never changes what the model computes, stays inside the budget, never makes a demand read wait
behind it, can be cancelled, and a failed prefetch only costs a re-read."""

from __future__ import annotations

import threading
import time

import pytest

from moestream.store.reader import ALIGN, Chunk, DirectFile, ReadCancelled, ReadJob, ThreadReader
from moestream.store.uring import UringReader
from tests.cache.streaming_helpers import run, tight_budget
from tests.cache.test_faults import assert_pool_whole
from tests.cache.test_streaming import assert_identical
from tests.cli.test_bad_input import run_cli
from tests.fixtures.tiny_models import MOE_ARCHS, gguf_path


PREDICTORS = [("lookahead", 1, 0.0), ("history", 2, 0.0), ("combined", 3, 0.2)]  # predictor, depth, threshold


@pytest.mark.parametrize("reader", ["thread", "uring"])
@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_prefetch_is_bit_identical_and_within_budget(arch, reader):
    path = gguf_path(arch, "q8_0")
    ref, _ = run(path, n_decode=12, mmap=True)
    for slots, (predictor, ahead, threshold) in [(2, PREDICTORS[0]), (4, PREDICTORS[0]), (3, PREDICTORS[1]),
                                                 (4, PREDICTORS[2])]:
        got, cache = run(path, n_decode=12, ram_budget=slots * tight_budget(path) // 2, reader=reader,
                         chunk_bytes=8192, depth=3, prefetch=True, predictor=predictor, prefetch_depth=ahead,
                         prefetch_threshold=threshold)
        assert_identical(got, ref)
        s = cache.stats
        assert s.prefetch_issued > 0 or slots == 2  # at one layer's top-k, every slot is held while it computes
        assert s.prefetch_issued >= s.prefetch_useful + s.prefetch_wasted + s.prefetch_cancelled - s.prefetch_late
        assert cache.pool.allocated_bytes <= cache.pool.budget
        assert_pool_whole(cache)


class SlowFile(DirectFile):
    """Every read takes 30 ms, as a slow disk would."""

    def read_into(self, offset, view):
        time.sleep(0.03)
        return super().read_into(offset, view)


def job(file, key, background, done, n_chunks=1):
    import mmap

    bufs = [mmap.mmap(-1, ALIGN) for _ in range(n_chunks)]
    chunks = [Chunk(i * ALIGN, memoryview(b), ALIGN) for i, b in enumerate(bufs)]
    return ReadJob(key, chunks, lambda j: done.append((time.perf_counter(), j)), background=background)


def test_thread_reader_runs_demand_reads_beside_queued_prefetches():
    path = gguf_path("mixtral")
    reader, done = ThreadReader(SlowFile(path), depth=2), []
    try:
        for i in range(6):
            reader.submit(job(reader.file, (0, i), True, done, n_chunks=4))  # 24 chunks, 1 background thread
        demand = job(reader.file, (1, 0), False, done)
        t0 = time.perf_counter()
        reader.submit(demand)
        while not any(j is demand for _, j in done):
            time.sleep(0.005)
        assert time.perf_counter() - t0 < 0.3  # not behind 24 x 30 ms of prefetch
        assert sum(j.background for _, j in done) < 6
    finally:
        reader.close()


def test_thread_reader_promotes_a_prefetch_a_demand_read_waits_for():
    path = gguf_path("mixtral")
    reader, done = ThreadReader(SlowFile(path), depth=4), []  # 2 background threads
    try:
        jobs = [job(reader.file, (0, i), True, done, n_chunks=4) for i in range(6)]  # 24 x 30 ms queued
        for j in jobs:
            reader.submit(j)
        t0 = time.perf_counter()
        reader.promote(jobs[-1])
        while not any(j is jobs[-1] for _, j in done):
            time.sleep(0.005)
        assert time.perf_counter() - t0 < 0.25 and jobs[-1].error is None
    finally:
        reader.close()


def test_uring_reader_puts_demand_chunks_in_the_ring_first():
    path = gguf_path("mixtral")
    reader, done = UringReader(DirectFile(path), depth=4), []
    reader._lock = threading.RLock()  # so the test can call promote while it holds the queues still
    try:
        background = [job(reader.file, (0, i), True, done, n_chunks=8) for i in range(4)]
        demand = job(reader.file, (1, 0), False, done)
        with reader._lock:  # hold the completion thread off so the queues are seen as submitted
            for b in background:
                b.start()
                reader._background.extend((b, c) for c in b.chunks)
            demand.start()
            reader._waiting.extend((demand, c) for c in demand.chunks)
            reader._pump()
            in_ring = [j for j, _, _ in reader._inflight.values()]
            assert demand in in_ring and not any(j.background for j in in_ring)  # the device is not idle
            assert reader._background  # prefetch chunks still queued behind it
            reader.promote(background[3])  # a demand read now waits for it: its chunks go first
            in_ring = [j for j, _, _ in reader._inflight.values()]
            assert in_ring.count(background[3]) + [j for j, _ in reader._waiting].count(background[3]) == 8
            assert all(j is demand or j is background[3] for j in in_ring)
            assert not any(bg for _, _, bg in reader._inflight.values())
        for b in background:
            reader.cancel(b)
        deadline = time.monotonic() + 10
        while len(done) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(done) == 5
        assert all(isinstance(j.error, ReadCancelled) for _, j in done if j.background and j is not background[3])
        assert demand.error is None and background[3].error is None
    finally:
        reader.close()


class FailingBackground:
    """A real reader, except that every background (prefetch) read fails."""

    def __init__(self, inner):
        self.inner, self.name, self.file = inner, inner.name, inner.file

    def submit(self, job):
        if job.background:
            job.start()
            for _ in job.chunks:
                threading.Thread(target=job.chunk_done, args=(OSError(5, "Input/output error"),)).start()
        else:
            self.inner.submit(job)

    def cancel(self, job):
        self.inner.cancel(job)

    def promote(self, job):
        self.inner.promote(job)

    def close(self):
        self.inner.close()


def test_a_failed_prefetch_costs_a_reread_not_the_generation():
    path = gguf_path("mixtral", "q8_0")
    ref, _ = run(path, mmap=True)
    reader = FailingBackground(ThreadReader(DirectFile(path), depth=4))
    got, cache = run(path, reader_object=reader, ram_budget=2 * tight_budget(path), chunk_bytes=8192, prefetch=True)
    assert_identical(got, ref)
    assert cache.stats.read_errors > 0 and cache.stats.prefetch_useful == 0
    assert_pool_whole(cache)


def test_generated_tokens_do_not_depend_on_prefetch():
    args = ["generate", "-p", "It was a fine morning, and", "-n", "48", "--seed", "5", "--ram-budget", "2MiB",
            "--stats"]
    on, off = run_cli(*args, "--prefetch"), run_cli(*args)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout == off.stdout
    assert "useful" in on.stderr and "prefetch off" in off.stderr
