"""Faults while streaming: a read that fails, a file truncated under a running model. Each gives a clear error
(no hang), every buffer goes back to the pool, and the next generation works."""

from __future__ import annotations

import errno
import os
import shutil
import threading

import pytest

from moestream.cache.config import CacheConfig
from moestream.engine.loader import load_model
from moestream.store.reader import Chunk, DirectFile, ExpertReadError, ThreadReader
from moestream.store.uring import UringReader
from tests.cache.streaming_helpers import greedy_logits, run, tight_budget
from tests.cache.test_streaming import assert_identical
from tests.fixtures.tiny_models import gguf_path


class FailingFile(DirectFile):
    """A disk whose `fail_at`-th read (counting from 1) fails with EIO; every other read is real."""

    def __init__(self, path, fail_at: int):
        super().__init__(path)
        self.fail_at, self.calls, self.lock = fail_at, 0, threading.Lock()

    def read_into(self, offset, view):
        with self.lock:
            self.calls += 1
            fail = self.calls == self.fail_at
        if fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return super().read_into(offset, view)


def assert_pool_whole(cache) -> None:
    """No reference held, no read in flight; every slot is free or holds a ready expert."""
    entries = cache._entries.values()
    assert all(e.refs == 0 for e in entries)
    assert all(e.weights is not None for e in entries)
    assert cache.pool.free_count + len(cache._entries) == cache.pool.n_slots


def bounded(fn, seconds: float = 60.0):
    """Run fn in a thread; fail the test (rather than hang it) if it does not finish in time."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a hang"
    if "error" in box:
        raise box["error"]
    return box["value"]


class MisalignedReads:
    """A real backend, except that its `fail_at`-th chunk is sent at a misaligned offset: the kernel refuses that
    O_DIRECT read (EINVAL), a genuine failed read through the backend's own completion path."""

    def __init__(self, inner, fail_at: int):
        self.inner, self.fail_at, self.count = inner, fail_at, 0
        self.name, self.file = inner.name, inner.file

    def submit(self, job):
        for i, chunk in enumerate(job.chunks):
            self.count += 1
            if self.count == self.fail_at:
                job.chunks[i] = Chunk(chunk.offset + 1, chunk.view, chunk.needed)
        self.inner.submit(job)

    def close(self):
        self.inner.close()


def check_fails_cleanly_then_recovers(path, reader, match: str) -> None:
    ref, _ = run(path, mmap=True)
    lm = load_model(path, progress=False, cache=CacheConfig(ram_budget=tight_budget(path), chunk_bytes=8192),
                    reader=reader)
    try:
        with pytest.raises(ExpertReadError, match=match) as info:
            bounded(lambda: greedy_logits(lm))
        assert "expert" in str(info.value) and "layer" in str(info.value)
        assert lm.cache.stats.read_errors == 1
        assert_pool_whole(lm.cache)
        assert_identical(bounded(lambda: greedy_logits(lm)), ref)  # the fault happens once; the run after is exact
        assert_pool_whole(lm.cache)
    finally:
        lm.close()


@pytest.mark.parametrize("fail_at", [1, 7, 40])
def test_disk_error_fails_the_generation_cleanly_and_the_next_one_works(fail_at):
    path = gguf_path("qwen3moe", "q8_0")
    check_fails_cleanly_then_recovers(path, ThreadReader(FailingFile(path, fail_at), depth=4), "Input/output error")


@pytest.mark.parametrize("backend", [ThreadReader, UringReader], ids=["thread", "uring"])
@pytest.mark.parametrize("fail_at", [1, 25])
def test_refused_read_fails_cleanly_in_each_backend(backend, fail_at):
    path = gguf_path("olmoe", "q8_0")
    reader = MisalignedReads(backend(DirectFile(path), depth=4), fail_at)
    check_fails_cleanly_then_recovers(path, reader, "Invalid argument")


def test_file_truncated_inside_an_expert_gives_a_clear_error(tmp_path):
    src = gguf_path("mixtral", "q8_0")
    path = tmp_path / "model.gguf"
    shutil.copy(src, path)
    lm = load_model(path, progress=False, cache=CacheConfig(ram_budget=tight_budget(path)))
    try:
        first = min(r.offset for e in range(lm.args.n_experts) for r in lm.experts.ranges(0, e))
        os.truncate(path, first + 1000)  # replaced/truncated under the running model: layer 0's experts are cut
        with pytest.raises(ExpertReadError, match="truncated") as info:
            bounded(lambda: greedy_logits(lm))
        assert "of layer 0" in str(info.value)
        assert_pool_whole(lm.cache)
    finally:
        lm.close()


def test_a_truncated_file_is_refused_at_load(tmp_path):
    src = gguf_path("mixtral", "q8_0")
    path = tmp_path / "model.gguf"
    shutil.copy(src, path)
    os.truncate(path, os.path.getsize(src) - 5000)
    from moestream.errors import GGUFFormatError

    with pytest.raises(GGUFFormatError, match="truncated"):
        load_model(path, progress=False)
