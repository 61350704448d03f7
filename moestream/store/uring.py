"""io_uring reader: chunks go into one ring (at most `depth` in flight); a completion thread reaps them with the
GIL released and signals jobs. Submitters (the engine thread, and the completion thread topping the ring back up)
share one lock. Background (prefetch) chunks enter the ring only while no demand chunk is queued or in flight, and
hold at most a quarter of it: a demand read finds room at once and waits for at most those few chunks to clear
the device. `promote` turns a prefetch that a demand read now waits for into demand.

Faults: a refused io_uring_setup (seccomp, old kernels, container policy) raises UringRefused, which `--reader
auto` turns into the thread reader; if the ring itself fails later, every queued and in-flight job fails with
ExpertReadError at once (none waits for a completion that cannot come); close() retries its wake-up while the
ring is full, so it cannot hang there."""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from collections import deque

from ..errors import ConfigError
from .reader import Chunk, DirectFile, ExpertReadError, ReadCancelled, ReadJob, short_read_error

_STOP = 0  # tag of the no-op that ends the completion thread
# Linux reads at most 2 GiB - 4 KiB at once and an SQE's length is a u32: a larger chunk goes into the ring as
# its first 1 GiB, and the rest is read by the short-read path in _check.
MAX_SQE_BYTES = 1 << 30


class UringRefused(ConfigError):
    """This process may not create an io_uring instance (io_uring_setup failed: `reason`)."""

    def __init__(self, reason: str):
        super().__init__(f"io_uring is not available here ({reason}); use --reader thread")
        self.reason = reason


def available() -> bool:
    try:
        from . import _uring  # noqa: F401
    except ImportError:
        return False
    return True


class UringReader:
    name = "uring"

    def __init__(self, file: DirectFile, depth: int = 16):
        try:
            from ._uring import Ring
        except ImportError:
            raise ConfigError("the io_uring reader was not built (needs Linux and a C compiler at install); "
                              "use --reader thread") from None
        try:
            self._ring = Ring(1 << max(depth * 2 - 1, 1).bit_length())
        except OSError as exc:
            raise UringRefused(exc.strerror or str(exc)) from None
        self.file, self.depth = file, depth
        self._lock = threading.Lock()
        self._waiting: deque[tuple[ReadJob, Chunk]] = deque()
        self._background: deque[tuple[ReadJob, Chunk]] = deque()
        self._inflight: dict[int, tuple[ReadJob, Chunk, bool]] = {}  # tag -> (job, chunk, went in as background)
        self._background_inflight = 0
        self._broken: ExpertReadError | None = None  # set when the ring failed: jobs fail at once from then on
        self._tags = itertools.count(1)
        self._thread = threading.Thread(target=self._reap_loop, name="moestream-uring", daemon=True)
        self._thread.start()

    def submit(self, job: ReadJob) -> None:
        job.start()
        with self._lock:
            (self._background if job.background else self._waiting).extend((job, c) for c in job.chunks)
        self._top_up()

    def cancel(self, job: ReadJob) -> None:
        with self._lock:
            dropped = [item for item in self._background if item[0] is job]
            if dropped:
                self._background = deque(item for item in self._background if item[0] is not job)
        for _ in dropped:
            job.chunk_done(ReadCancelled())

    def promote(self, job: ReadJob) -> None:
        """A demand read now waits for this background job: its queued chunks go to the front of the demand
        queue (chunks already in the ring finish as they are)."""
        with self._lock:
            mine = [item for item in self._background if item[0] is job]
            if mine:
                self._background = deque(item for item in self._background if item[0] is not job)
                self._waiting.extendleft(reversed(mine))
        if mine:
            self._top_up()

    def _top_up(self) -> None:
        """Move queued chunks into the ring; once the ring has failed, fail every chunk instead."""
        with self._lock:
            if self._broken is None:
                try:
                    self._pump()
                    return
                except OSError as exc:
                    self._broken = self._ring_failed(exc)
        self._fail_all()

    def _pump(self) -> None:
        """Move queued chunks into the ring up to `depth` in flight, demand first (caller holds the lock)."""
        queued = False
        while len(self._inflight) < self.depth:
            queue = self._next_queue()
            if queue is None:
                break
            job, chunk = queue[0]
            tag = next(self._tags)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(chunk.view))
            fd, offset = self.file.locate(chunk.offset)
            if not self._ring.queue_read(fd, addr, min(len(chunk.view), MAX_SQE_BYTES), offset, tag):
                break
            queue.popleft()
            background = queue is self._background
            self._inflight[tag] = (job, chunk, background)
            self._background_inflight += background
            queued = True
        if queued:
            self._ring.submit()

    def _next_queue(self) -> deque | None:
        if self._waiting:
            return self._waiting
        idle = len(self._inflight) == self._background_inflight  # no demand chunk in the ring
        if self._background and idle and self._background_inflight < max(1, self.depth // 4):
            return self._background
        return None

    def _reap_loop(self) -> None:
        try:
            while self._reap_batch():
                pass
        except OSError as exc:
            with self._lock:
                self._broken = self._broken or self._ring_failed(exc)
            self._fail_all()

    def _reap_batch(self) -> bool:
        """Signal one batch of completions and top the ring up; False once the stop no-op arrived."""
        for tag, result in self._ring.wait(1):
            if tag == _STOP:
                return False
            with self._lock:
                item = self._inflight.pop(tag, None)  # None: its job was failed with the ring already
                if item:
                    self._background_inflight -= item[2]
            if item:
                job, chunk, _ = item
                job.chunk_done(self._check(job, chunk, result))
        self._top_up()
        return True

    def _ring_failed(self, exc: OSError) -> ExpertReadError:
        return ExpertReadError(f"{self.file.path}: the io_uring ring failed ({exc.strerror or exc}); "
                               f"rerun with --reader thread")

    def _fail_all(self) -> None:
        """The ring has failed (self._broken): no chunk it holds or would take can complete, so fail them all."""
        with self._lock:
            jobs = [job for job, _, _ in self._inflight.values()] + [job for job, _ in self._waiting]
            jobs += [job for job, _ in self._background]
            self._inflight.clear()
            self._waiting.clear()
            self._background.clear()
            self._background_inflight = 0
        for job in jobs:
            job.chunk_done(self._broken)

    def _check(self, job: ReadJob, chunk: Chunk, result: int) -> BaseException | None:
        if result < 0:
            return self._failed(job, os.strerror(-result))
        if result < chunk.needed:  # a regular file reads short only at its end (or past MAX_SQE_BYTES)
            try:
                rest = self.file.read_into(chunk.offset + result, chunk.view[result:]) if result else 0
            except OSError as exc:
                return self._failed(job, exc.strerror or str(exc))
            if result + rest < chunk.needed:
                return short_read_error(self.file, job, chunk, result + rest)
        return None

    def _failed(self, job: ReadJob, why: str) -> ExpertReadError:
        layer, expert = job.key
        return ExpertReadError(f"{self.file.path}: reading expert {expert} of layer {layer} failed: {why}")

    def close(self) -> None:
        while self._thread.is_alive() and self._broken is None:
            self._thread.join(None if self._wake_reaper() else 0.01)
        if not self._thread.is_alive():  # a failed ring cannot be woken: its reaper stays parked on it (a daemon)
            self._ring.close()
        self.file.close()

    def _wake_reaper(self) -> bool:
        """Queue the stop no-op; False while the ring has no room (the reaper is making some) or has failed."""
        with self._lock:
            try:
                return self._ring.wake(_STOP)
            except OSError as exc:
                self._broken = self._broken or self._ring_failed(exc)
        self._fail_all()
        return False
