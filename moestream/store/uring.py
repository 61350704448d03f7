"""io_uring reader: chunks go into one ring (at most `depth` in flight); a completion thread reaps them with the
GIL released and signals jobs. Submitters (the engine thread, and the completion thread topping the ring back up)
share one lock. Background (prefetch) chunks enter the ring only while no demand chunk is queued or in flight, and
hold at most a quarter of it: a demand read finds room at once and waits for at most those few chunks to clear
the device. `promote` turns a prefetch that a demand read now waits for into demand."""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from collections import deque

from ..errors import ConfigError
from .reader import Chunk, DirectFile, ExpertReadError, ReadCancelled, ReadJob, short_read_error

_STOP = 0  # tag of the no-op that ends the completion thread


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
            raise ConfigError(f"io_uring is not available here ({exc.strerror}); use --reader thread") from None
        self.file, self.depth = file, depth
        self._lock = threading.Lock()
        self._waiting: deque[tuple[ReadJob, Chunk]] = deque()
        self._background: deque[tuple[ReadJob, Chunk]] = deque()
        self._inflight: dict[int, tuple[ReadJob, Chunk, bool]] = {}  # tag -> (job, chunk, went in as background)
        self._background_inflight = 0
        self._tags = itertools.count(1)
        self._thread = threading.Thread(target=self._reap_loop, name="moestream-uring", daemon=True)
        self._thread.start()

    def submit(self, job: ReadJob) -> None:
        job.start()
        with self._lock:
            (self._background if job.background else self._waiting).extend((job, c) for c in job.chunks)
            self._pump()

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
                self._pump()

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
            if not self._ring.queue_read(self.file.fd, addr, len(chunk.view), chunk.offset, tag):
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
        while True:
            for tag, result in self._ring.wait(1):
                if tag == _STOP:
                    return
                with self._lock:
                    job, chunk, background = self._inflight.pop(tag)
                    self._background_inflight -= background
                job.chunk_done(self._check(job, chunk, result))
            with self._lock:
                self._pump()

    def _check(self, job: ReadJob, chunk: Chunk, result: int) -> BaseException | None:
        if result < 0:
            layer, expert = job.key
            return ExpertReadError(f"{self.file.path}: reading expert {expert} of layer {layer} failed: "
                                   f"{os.strerror(-result)}")
        if result < chunk.needed:  # a regular file reads short only at its end
            rest = self.file.read_into(chunk.offset + result, chunk.view[result:]) if result else 0
            if result + rest < chunk.needed:
                return short_read_error(self.file, job, chunk, result + rest)
        return None

    def close(self) -> None:
        if self._thread.is_alive():
            with self._lock:
                self._ring.wake(_STOP)
            self._thread.join()
        self._ring.close()
        self.file.close()
