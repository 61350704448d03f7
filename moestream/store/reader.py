"""Aligned reads of expert bytes from the user's GGUF: O_DIRECT into page-aligned buffers (no page cache, so the
memory a run uses is the budget it was given), with parallel requests in flight.

A `ReadJob` is one expert: a few aligned chunks. Backends (`ThreadReader` here, `UringReader` in uring.py) take
jobs and call `job.on_done(job)` from their own thread when every chunk has landed or one has failed."""

from __future__ import annotations

import errno
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..errors import MoestreamError

ALIGN = 4096  # O_DIRECT needs offset, length and buffer address aligned to the logical block size; 4 KiB covers all


class ExpertReadError(MoestreamError):
    """A read of expert weights failed or came back short."""


class ReadCancelled(Exception):
    """A background read dropped before it started (not an error: nobody needs those bytes any more)."""


def align_down(n: int) -> int:
    return n // ALIGN * ALIGN


def align_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class DirectFile:
    """The GGUF opened for aligned reads. Falls back to buffered reads, with a warning, where the filesystem refuses
    O_DIRECT (tmpfs, some network and FUSE filesystems); buffered pages are then dropped after each read."""

    def __init__(self, path: str | os.PathLike, direct: bool = True):
        self.path = os.fspath(path)
        self.size = os.path.getsize(self.path)
        self.fd, self.direct = self._open(direct)

    def _open(self, direct: bool) -> tuple[int, bool]:
        if direct and hasattr(os, "O_DIRECT"):
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
                if _probe_direct(fd):
                    return fd, True
                os.close(fd)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
            warnings.warn(f"{self.path}: the filesystem refuses direct I/O; using buffered reads "
                          f"(the page cache will hold copies of expert bytes)", RuntimeWarning, stacklevel=3)
        return os.open(self.path, os.O_RDONLY), False

    def locate(self, offset: int) -> tuple[int, int]:
        """(descriptor, offset in that file) of a byte (ShardedFile has several files)."""
        return self.fd, offset

    def read_into(self, offset: int, view: memoryview) -> int:
        """Fill `view` from `offset` (both aligned when direct); returns bytes read (short only at end of file)."""
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n == 0:
                break
            done += n
        if not self.direct and done:
            os.posix_fadvise(self.fd, offset, done, os.POSIX_FADV_DONTNEED)
        return done

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ShardedFile:
    """The shards of a split GGUF as one file in formats/split.py's address space (shard index << SHARD_BITS +
    offset in the shard); DirectFile's interface."""

    def __init__(self, paths: list, direct: bool = True):
        from ..formats.split import SHARD_BITS

        self.bits, self.files = SHARD_BITS, []
        try:
            for p in paths:
                self.files.append(DirectFile(p, direct))
        except BaseException:
            self.close()
            raise
        self.path, self.direct = self.files[0].path, all(f.direct for f in self.files)

    def locate(self, offset: int) -> tuple[int, int]:
        shard = offset >> self.bits
        if not 0 <= shard < len(self.files):
            raise OSError(errno.EINVAL, f"offset {offset} is in no shard of {len(self.files)}")
        return self.files[shard].fd, offset & ((1 << self.bits) - 1)

    def read_into(self, offset: int, view: memoryview) -> int:
        shard = offset >> self.bits
        if not 0 <= shard < len(self.files):
            raise OSError(errno.EINVAL, f"offset {offset} is in no shard of {len(self.files)}")
        return self.files[shard].read_into(offset & ((1 << self.bits) - 1), view)

    def close(self) -> None:
        for f in self.files:
            f.close()


def open_file(paths, direct: bool = True) -> "DirectFile | ShardedFile":
    """One path (or a list of one): DirectFile; several: the shards of a split model."""
    if isinstance(paths, (list, tuple)):
        return DirectFile(paths[0], direct) if len(paths) == 1 else ShardedFile(list(paths), direct)
    return DirectFile(paths, direct)


def _probe_direct(fd: int) -> bool:
    import mmap

    buf = mmap.mmap(-1, ALIGN)
    try:
        os.preadv(fd, [memoryview(buf)], 0)
        return True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    finally:
        buf.close()


@dataclass
class Chunk:
    """One request: `view` (aligned address and length) filled from file `offset`; the first `needed` bytes must
    arrive (the rest is alignment padding that may lie past the end of the file)."""

    offset: int
    view: memoryview
    needed: int


@dataclass
class ReadJob:
    key: tuple[int, int]  # (layer, expert)
    chunks: list[Chunk]
    on_done: Callable[["ReadJob"], None]
    background: bool = False  # a prefetch: queued behind every demand read, cancellable while queued
    error: BaseException | None = None
    submitted: float = 0.0
    latency: float = 0.0  # submit -> last chunk done, seconds
    _remaining: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(c.view) for c in self.chunks)

    def start(self) -> None:
        self._remaining, self.submitted = len(self.chunks), time.perf_counter()

    @property
    def finished(self) -> bool:
        return self._remaining == 0

    def chunk_done(self, error: BaseException | None = None) -> None:
        with self._lock:
            self.error = self.error or error
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self.latency = time.perf_counter() - self.submitted
            self.on_done(self)


class Reader(Protocol):
    name: str
    file: DirectFile

    def submit(self, job: ReadJob) -> None:
        """Start reading; demand jobs go ahead of every queued background job."""

    def cancel(self, job: ReadJob) -> None:
        """Drop a background job's chunks that have not started (each completes with ReadCancelled)."""

    def promote(self, job: ReadJob) -> None:
        """A demand read now waits for this background job: read its remaining chunks as demand."""

    def close(self) -> None: ...


def short_read_error(file: DirectFile, job: ReadJob, chunk: Chunk, got: int) -> ExpertReadError:
    layer, expert = job.key
    return ExpertReadError(
        f"{file.path}: expert {expert} of layer {layer} needs bytes up to {chunk.offset + chunk.needed} but the "
        f"file ends at {chunk.offset + got} (was it truncated or replaced while running?)"
    )


def read_chunk(file: DirectFile, job: ReadJob, chunk: Chunk) -> BaseException | None:
    """Blocking read of one chunk; returns the error instead of raising so completion is always signalled."""
    try:
        got = file.read_into(chunk.offset, chunk.view)
    except OSError as exc:
        layer, expert = job.key
        return ExpertReadError(f"{file.path}: reading expert {expert} of layer {layer} failed: {exc.strerror or exc}")
    return short_read_error(file, job, chunk, got) if got < chunk.needed else None


class ThreadReader:
    """`depth` threads for demand reads, each a blocking preadv at a time (the GIL is released while the kernel
    reads), and `depth // 2` more for background reads, so a demand read never waits behind a prefetch; a promoted
    background job's chunks that have not started move to the demand threads."""

    name = "thread"

    def __init__(self, file: DirectFile, depth: int = 16):
        self.file, self.depth = file, depth
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix="moestream-read")
        self._background = ThreadPoolExecutor(max(1, depth // 2), thread_name_prefix="moestream-prefetch")
        self._futures: dict[int, list] = {}  # id(background job) -> [(future, chunk)]
        self._lock = threading.Lock()

    def submit(self, job: ReadJob) -> None:
        job.start()
        pool = self._background if job.background else self._pool
        futures = [(pool.submit(self._run, job, chunk), chunk) for chunk in job.chunks]
        if job.background:
            with self._lock:
                self._futures[id(job)] = futures

    def cancel(self, job: ReadJob) -> None:
        with self._lock:
            futures = self._futures.pop(id(job), [])
        for f, _ in futures:
            if f.cancel():  # not started: it never runs, so signal its chunk here
                job.chunk_done(ReadCancelled())

    def promote(self, job: ReadJob) -> None:
        with self._lock:
            futures = self._futures.pop(id(job), [])
        for f, chunk in futures:
            if f.cancel():  # not started: run it on a demand thread instead
                self._pool.submit(self._run, job, chunk)

    def _run(self, job: ReadJob, chunk: Chunk) -> None:
        job.chunk_done(read_chunk(self.file, job, chunk))
        if job.background and job.finished:
            with self._lock:
                self._futures.pop(id(job), None)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._background.shutdown(wait=True)
        self.file.close()
