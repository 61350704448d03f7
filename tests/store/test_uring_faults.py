"""io_uring under hostile use and refusal: a Ring that never opened (or failed to) touches no descriptor and
refuses every call; close is idempotent; lengths that do not fit an SQE and negative offsets are refused;
completions already taken off the ring survive a failing io_uring_enter; a wake-up finds room in a full ring;
a reader whose ring fails fails its jobs at once and still closes; and `--reader auto` under a seccomp filter
that refuses io_uring_setup (as container runtimes do) reads with threads, says so once, and generates exactly
the tokens of `--reader thread`."""

from __future__ import annotations

import mmap
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from moestream.assets import DEFAULT_MODEL
from moestream.store._uring import Ring
from moestream.store.reader import ALIGN, Chunk, DirectFile, ExpertReadError, ReadJob
from moestream.store.uring import UringReader

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("uring") / "blob.bin"
    path.write_bytes(os.urandom(16 * ALIGN))
    return path


def test_a_ring_that_never_opened_refuses_calls_and_closes_no_descriptor():
    before = os.fstat(0)
    ring = Ring.__new__(Ring)  # __init__ never ran
    for call in (ring.submit, ring.fileno, lambda: ring.wait(1), lambda: ring.wake(1),
                 lambda: ring.queue_read(0, 0, ALIGN, 0, 1)):
        with pytest.raises(ValueError, match="closed .or was never opened"):
            call()
    ring.close()
    del ring
    with pytest.raises(TypeError):
        Ring("eight")  # __init__ fails before io_uring_setup
    assert os.fstat(0) == before, "a Ring closed descriptor 0"


def test_close_is_idempotent_and_a_second_init_is_refused():
    ring = Ring(4)
    with pytest.raises(ValueError, match="already open"):
        ring.__init__(4)
    ring.close()
    ring.close()
    with pytest.raises(ValueError, match="closed"):
        ring.wait(1)


@pytest.mark.parametrize("fd,length,offset", [(3, 1 << 32, 0), (3, (1 << 32) + ALIGN, 0), (3, -1, 0),
                                              (3, ALIGN, -ALIGN), (-1, ALIGN, 0)],
                         ids=["4GiB", "over-4GiB", "negative-length", "negative-offset", "negative-fd"])
def test_reads_that_do_not_fit_an_sqe_are_refused(fd, length, offset):
    ring = Ring(4)
    try:
        with pytest.raises(ValueError, match="4 GiB"):
            ring.queue_read(fd, 0, length, offset, 1)
        assert ring.queue_read(3, 0, (1 << 32) - 1, 0, 2)  # the largest length fits (never submitted)
    finally:
        ring.close()


def test_completions_taken_before_a_failing_enter_are_returned():
    ring = Ring(8)
    try:
        assert ring.wake(1) and ring.wake(2)  # two no-ops, completed at once
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, ring.fileno())  # the ring's fd is /dev/null now: every io_uring_enter fails
        os.close(devnull)
        assert sorted(ring.wait(3)) == [(1, 0), (2, 0)]  # the two taken, although the wait for a third failed
        with pytest.raises(OSError):
            ring.wait(1)
    finally:
        ring.close()  # closes the /dev/null descriptor that took the ring's place


def test_a_wake_up_finds_room_in_a_full_submission_ring(data_file):
    ring = Ring(4)
    fd = os.open(data_file, os.O_RDONLY)
    buf = mmap.mmap(-1, 4 * ALIGN)
    try:
        addr = ctypes_addr(buf)
        assert all(ring.queue_read(fd, addr + i * ALIGN, ALIGN, i * ALIGN, 10 + i) for i in range(4))
        assert not ring.queue_read(fd, addr, ALIGN, 0, 99)  # the submission ring is full
        assert ring.wake(7)  # hands the four reads over first, then finds room
        got = []
        while len(got) < 5:
            got += ring.wait(1)
        assert sorted(got) == [(7, 0), (10, ALIGN), (11, ALIGN), (12, ALIGN), (13, ALIGN)]
        assert bytes(buf) == data_file.read_bytes()[:4 * ALIGN]
    finally:
        ring.close()
        os.close(fd)
        buf.close()


def ctypes_addr(buf: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def one_chunk_job(buf: mmap.mmap, on_done, key=(0, 0)) -> ReadJob:
    return ReadJob(key, [Chunk(0, memoryview(buf), ALIGN)], on_done)


def test_a_failed_ring_fails_its_jobs_at_once_and_still_closes(data_file):
    reader = UringReader(DirectFile(data_file), depth=4)
    bufs = [mmap.mmap(-1, ALIGN) for _ in range(3)]
    release, first, failed = threading.Event(), queue.SimpleQueue(), queue.SimpleQueue()
    # the first job's completion holds the reaper in its callback, so the ring can be broken under it
    reader.submit(one_chunk_job(bufs[0], lambda job: (first.put(job), release.wait(30))))
    assert first.get(timeout=30).error is None
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, reader._ring.fileno())  # every io_uring_enter on this ring fails from now on
    os.close(devnull)
    reader.submit(one_chunk_job(bufs[1], failed.put, (1, 2)))  # submitting fails: the job fails, no exception
    release.set()
    reader._thread.join(30)  # the reaper's next wait fails too, and it ends
    reader.submit(one_chunk_job(bufs[2], failed.put, (3, 4)))  # a broken ring fails new jobs at once
    for _ in range(2):
        job = failed.get(timeout=30)
        assert isinstance(job.error, ExpertReadError) and "io_uring ring failed" in str(job.error)
        assert "--reader thread" in str(job.error)
    reader.close()
    reader.close()


def test_reader_close_twice(data_file):
    reader = UringReader(DirectFile(data_file), depth=2)
    reader.close()
    reader.close()


GENERATE = ["generate", "-m", str(DEFAULT_MODEL), "-p", "It was a dark", "-n", "8", "--temp", "0", "--stats"]
REFUSED = f"""
from moestream.cli.main import main
from moestream.store._uring import Ring
try:
    Ring(8)
    print("io_uring_setup was allowed")
except OSError as exc:
    print("setup refused:", exc.strerror)
args = {GENERATE!r}
codes = [main(args + ["--reader", r]) for r in ("thread", "auto", "auto", "uring")]
print("exit codes", codes)
"""


def test_reader_auto_falls_back_to_threads_when_io_uring_is_refused():
    res = subprocess.run([sys.executable, "-m", "tests.store.seccomp", sys.executable, "-c", REFUSED], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    out, err = res.stdout, res.stderr
    assert res.returncode == 0 and "setup refused: Operation not permitted" in out, out + err
    assert "exit codes [0, 0, 0, 1]" in out, out + err
    thread, auto1, auto2 = out.split("\n", 1)[1].rsplit("exit codes", 1)[0].splitlines()
    assert thread.startswith("It was a dark") and auto1 == auto2 == thread  # the same tokens as --reader thread
    assert err.count("io_uring is refused here (Operation not permitted); reading with threads instead") == 1, err
    assert err.count("thread reader") == 3  # every run summary names the reader it used
    assert "error: io_uring is not available here (Operation not permitted); use --reader thread" in err
