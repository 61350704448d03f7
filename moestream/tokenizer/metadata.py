"""Where the tokenizer gets its GGUF metadata from.

`Tokenizer.from_gguf` accepts an open `GGUFFile`, a plain metadata dict, or a path. For a path we read only the
key/value section ourselves: the `gguf` package's reader builds a numpy view per array element, which takes ~10 s
for a 150k-token vocabulary (plus 150k merges), while a struct walk over the same bytes takes well under a second.
Values come back in the same plain-Python form as `GGUFFile.metadata` (str, int, float, bool, lists of those).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TokenizerError

# GGUF value type id -> (struct format, numpy dtype) for fixed-size scalars.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "<u1"),  # bool, stored as one byte
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7


def metadata_of(source: Any) -> Mapping[str, Any]:
    """The metadata mapping of a `GGUFFile`-like object (has `.metadata`), a mapping, or a GGUF path."""
    if isinstance(source, Mapping):
        return source
    if hasattr(source, "metadata"):
        return source.metadata
    if isinstance(source, (str, os.PathLike)):
        return read_metadata(source)
    raise TokenizerError(f"cannot read tokenizer metadata from {type(source).__name__}: pass a GGUFFile, dict or path")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All key/value pairs of a GGUF file (v2/v3, little-endian), without touching the tensor table."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Walker(buf).header()
    except (OSError, ValueError, struct.error, IndexError) as exc:
        raise TokenizerError(f"{path}: cannot read GGUF metadata ({type(exc).__name__}: {exc})") from None


class _Walker:
    """Sequential reader over the mapped bytes; `pos` advances as values are decoded."""

    def __init__(self, buf: mmap.mmap):
        self.buf = buf
        self.pos = 0

    def header(self) -> dict[str, Any]:
        if self.buf[:4] != b"GGUF":
            raise ValueError("not a GGUF file (bad magic)")
        self.pos = 4
        version = self._scalar(4)
        if version not in (2, 3):
            # v1 used 32-bit counts; a huge number means a big-endian file. Neither is produced any more.
            raise ValueError(f"unsupported GGUF version {version}")
        self._scalar(10)  # tensor count: not needed here
        n_kv = self._scalar(10)
        out: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            out[key] = self._value(self._scalar(4))
        return out

    def _scalar(self, vtype: int) -> Any:
        fmt, _ = _SCALARS[vtype]
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        (n,) = struct.unpack_from("<Q", self.buf, self.pos)
        start = self.pos + 8
        self.pos = start + n
        # surrogateescape keeps any non-UTF-8 token bytes recoverable (token_bytes re-encodes the same way).
        return self.buf[start : self.pos].decode("utf-8", "surrogateescape")

    def _value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            return self._array()
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        return self._scalar(vtype)

    def _array(self) -> list[Any]:
        etype = self._scalar(4)
        count = self._scalar(10)
        if etype == _STRING:
            return [self._string() for _ in range(count)]
        if etype == _ARRAY:
            return [self._array() for _ in range(count)]
        if etype not in _SCALARS:
            raise ValueError(f"unknown GGUF array element type {etype}")
        # Fixed-size elements: one numpy read instead of `count` struct calls.
        dtype = np.dtype(_SCALARS[etype][1])
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * dtype.itemsize
        if etype == _BOOL:
            return [bool(v) for v in values]
        return values.tolist()
