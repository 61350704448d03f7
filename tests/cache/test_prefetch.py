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
from tests.fixtures.tiny_models import CONFIGS, gguf_path


@pytest.mark.parametrize("reader", ["thread", "uring"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_prefetch_is_bit_identical_and_within_budget(arch, reader):
    path = gguf_path(arch, "q8_0")
    ref, _ = run(path, mmap=True)
    for slots in (2, 4):
        got, cache = run(path, ram_budget=slots * tight_budget(path) // 2, reader=reader, chunk_bytes=8192,
                         depth=3, prefetch=True)
        assert_identical(got, ref)
        s = cache.stats
        assert s.prefetch_issued > 0
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


def test_uring_reader_puts_demand_chunks_in_the_ring_first():
    path = gguf_path("mixtral")
    reader, done = UringReader(DirectFile(path), depth=4), []
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
            in_ring = [j for j, _ in reader._inflight.values()]
            assert demand in in_ring and sum(j.background for j in in_ring) <= 2  # at most half the ring
            assert reader._background  # prefetch chunks still queued behind it
        for b in background:
            reader.cancel(b)
        deadline = time.monotonic() + 10
        while len(done) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(done) == 5
        assert all(isinstance(j.error, ReadCancelled) for _, j in done if j.background)
        assert demand.error is None
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
    args = ["generate", "-p", "It was a fine morning, and", "-n", "48", "--seed", "5", "--ram-budget", "2MiB"]
    on, off = run_cli(*args, "--prefetch"), run_cli(*args)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout == off.stdout
    assert "useful" in on.stderr and "prefetch off" in off.stderr
