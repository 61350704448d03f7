"""The header walker's string-array loop (gguf_parse._Walker._strings) reads a window of bytes at a time: strings
that span windows, one longer than a window, and non-UTF-8 token bytes read exactly as the one-string reader
reads them, and every truncation (inside a length, inside a string) is a ValueError, never a short list."""

from __future__ import annotations

import struct

import pytest

from moestream.formats.gguf_parse import _Walker

STRING, ARRAY = 8, 9


def string_array(items: list[bytes]) -> bytes:
    """An array value's bytes: element type, count, then each string as u64 length + bytes."""
    return struct.pack("<IQ", STRING, len(items)) + b"".join(struct.pack("<Q", len(b)) + b for b in items)


def walk(buf: bytes) -> tuple[list[str], int]:
    walker = _Walker(memoryview(buf))
    return walker._array(), walker.pos


def one_by_one(items: list[bytes]) -> list[str]:
    return [b.decode("utf-8", "surrogateescape") for b in items]


CASES = {
    "short": [f"tok{i}".encode() for i in range(5000)],
    "spans windows": [bytes([65 + i % 26]) * (i % 300) for i in range(3000)],
    "one longer than a window": [b"a", b"x" * 300_000, b"", b"b" * 70_000, b"c"],
    "non-UTF-8 bytes": [b"\xff\xfe", b"\xe2\x96", "é".encode(), b"\x00"] * 100,
    "empty array": [],
}


@pytest.mark.parametrize("name", CASES)
def test_string_arrays_read_whole(name):
    items = CASES[name]
    raw = string_array(items)
    got, pos = walk(raw + b"TAIL")
    assert got == one_by_one(items)
    assert pos == len(raw)  # the walker stops right after the array


@pytest.mark.parametrize("name", ["short", "one longer than a window"])
def test_every_truncation_is_an_error(name):
    raw = string_array(CASES[name])
    cuts = sorted({12, 13, 19, 20, 21, len(raw) // 2, len(raw) - 1, *range(len(raw) - 9, len(raw))})
    for cut in cuts:
        with pytest.raises(ValueError):
            walk(raw[:cut])
