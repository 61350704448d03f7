"""A sequential walk over a GGUF header: key/value metadata and the tensor table, with struct and one numpy read
per numeric array. The `gguf` package's reader builds a numpy view per array element, which costs ~8 s for a
50k-token vocabulary (plus its merges) on every open; this walk takes a fraction of a second.

Layout (GGUF v2/v3, little-endian): magic, u32 version, u64 n_tensors, u64 n_kv, n_kv x (string key, u32 type,
value), n_tensors x (string name, u32 n_dims, u64 x n_dims dims (ne order), u32 ggml type, u64 offset), padding
to `general.alignment` (default 32), tensor data. Truncation surfaces as struct.error/IndexError/ValueError."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

# GGUF value type id -> (struct format, numpy dtype) for fixed-size scalars.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"), 5: ("<i", "<i4"),
    6: ("<f", "<f4"), 7: ("<?", "<u1"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"), 12: ("<d", "<f8"),
}
_BOOL, _STRING, _ARRAY = 7, 8, 9
_U32, _U64 = 4, 10
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class RawTensor:
    name: str
    ne: tuple[int, ...]  # dims innermost first, as stored
    type_id: int
    rel_offset: int  # from the start of the data section


@dataclass(frozen=True)
class RawHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[RawTensor]
    data_start: int


def parse_header(buf) -> RawHeader:
    return _Walker(buf).header()


class _Walker:
    """Reads values at `pos` and advances it."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def header(self) -> RawHeader:
        if bytes(self.buf[:4]) != b"GGUF":
            raise ValueError("bad magic")
        self.pos = 4
        version = self._scalar(_U32)
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version} (big-endian or pre-2023 file?)")
        n_tensors, n_kv = self._scalar(_U64), self._scalar(_U64)
        metadata = {self._string(): self._value(self._scalar(_U32)) for _ in range(n_kv)}
        tensors = [self._tensor() for _ in range(n_tensors)]
        return RawHeader(version, metadata, tensors, self._aligned(metadata))

    def _aligned(self, metadata: dict[str, Any]) -> int:
        align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise ValueError(f"general.alignment must be a power of two, got {align!r}")
        return -(-self.pos // align) * align

    def _tensor(self) -> RawTensor:
        name = self._string()
        n_dims = self._scalar(_U32)
        if n_dims > 8:
            raise ValueError(f"tensor {name} claims {n_dims} dimensions")
        ne = tuple(self._scalar(_U64) for _ in range(n_dims))
        return RawTensor(name, ne, self._scalar(_U32), self._scalar(_U64))

    def _scalar(self, vtype: int) -> Any:
        fmt, _ = _SCALARS[vtype]
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._scalar(_U64)
        start, self.pos = self.pos, self.pos + n
        if self.pos > len(self.buf):
            raise ValueError("string runs past the end of the file")
        # surrogateescape keeps non-UTF-8 token bytes recoverable (the tokenizer re-encodes the same way)
        return bytes(self.buf[start : self.pos]).decode("utf-8", "surrogateescape")

    def _value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            return self._array()
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        return self._scalar(vtype)

    def _array(self) -> list[Any]:
        etype, count = self._scalar(_U32), self._scalar(_U64)
        if etype == _STRING:
            return [self._string() for _ in range(count)]
        if etype == _ARRAY:
            return [self._array() for _ in range(count)]
        if etype not in _SCALARS:
            raise ValueError(f"unknown GGUF array element type {etype}")
        dtype = np.dtype(_SCALARS[etype][1])
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)  # one read, not count calls
        self.pos += count * dtype.itemsize
        return [bool(v) for v in values] if etype == _BOOL else values.tolist()
