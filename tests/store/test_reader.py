"""Aligned direct reads of arbitrary byte ranges of a real file, through each backend, equal plain reads."""

from __future__ import annotations

import mmap
import os
import queue
import random

import pytest

from moestream.store.reader import ALIGN, Chunk, DirectFile, ReadJob, ThreadReader, align_down, align_up
from moestream.store.uring import UringReader

BACKENDS = [ThreadReader, UringReader]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reader") / "blob.bin"
    rng = random.Random(0)
    path.write_bytes(rng.randbytes(3 * (1 << 20) + 1234))  # not a multiple of the alignment: reads hit the end
    return path


def read_range(reader, offset: int, nbytes: int, chunk: int) -> bytes:
    """Widen [offset, offset+nbytes) to alignment, read it in `chunk`-byte requests, slice the range back out."""
    start, end = align_down(offset), align_up(offset + nbytes)
    buf = mmap.mmap(-1, end - start)
    view, head = memoryview(buf), offset - start
    chunks = [Chunk(start + i, view[i:min(i + chunk, end - start)], max(0, min(chunk, head + nbytes - i)))
              for i in range(0, end - start, chunk)]
    done = queue.SimpleQueue()
    reader.submit(ReadJob((0, 0), chunks, done.put))
    job = done.get(timeout=30)
    assert job.error is None, job.error
    return bytes(view[head:head + nbytes])


@pytest.mark.parametrize("backend", BACKENDS, ids=["thread", "uring"])
def test_random_ranges_match_plain_reads(backend, data_file):
    blob = data_file.read_bytes()
    reader = backend(DirectFile(data_file), depth=5)
    assert reader.file.direct
    rng = random.Random(1)
    try:
        for _ in range(60):
            offset = rng.randrange(len(blob) - 1)
            nbytes = rng.randrange(1, min(len(blob) - offset, 700_000) + 1)
            chunk = rng.choice([ALIGN, 3 * ALIGN, 64 * ALIGN, 1 << 20])
            assert read_range(reader, offset, nbytes, chunk) == blob[offset:offset + nbytes]
        tail = len(blob) - 5000  # the last range ends inside an alignment block at the end of the file
        assert read_range(reader, tail, 5000, ALIGN) == blob[tail:]
    finally:
        reader.close()


@pytest.mark.parametrize("backend", BACKENDS, ids=["thread", "uring"])
def test_a_range_past_the_end_is_a_short_read_error(backend, data_file):
    reader = backend(DirectFile(data_file), depth=2)
    size = os.path.getsize(data_file)
    try:
        buf = mmap.mmap(-1, 2 * ALIGN)
        done = queue.SimpleQueue()
        reader.submit(ReadJob((3, 5), [Chunk(align_down(size), memoryview(buf), 2 * ALIGN)], done.put))
        job = done.get(timeout=30)
        assert "expert 5 of layer 3" in str(job.error) and "truncated" in str(job.error)
    finally:
        reader.close()
