"""A sequential walk over a GGUF header: key/value metadata and the tensor table, with struct and one numpy read
per numeric array. The `gguf` package's reader builds a numpy view per array element, which costs ~8 s for a
50k-token vocabulary (plus its merges) on every open; this walk takes a fraction of a second.

Structure is checked as it is read, so a hostile header fails here with a ValueError naming the key or tensor
(GGUFFile turns it into GGUFFormatError) instead of reaching numpy or the model: counts cannot promise more
bytes than the file has left, arrays nest at most MAX_ARRAY_DEPTH deep (no RecursionError), keys are unique
(llama.cpp rejects duplicates too), and a tensor has 1..MAX_DIMS dimensions (ggml's GGML_MAX_DIMS), each >= 1.

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
_U64_STRUCT = struct.Struct("<Q")
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 8  # llama.cpp reads no nested arrays at all; a few levels leave room without recursing deep
MAX_DIM = 1 << 62  # a dimension beyond this cannot describe data in any file (and overflows int64 products)


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
    data_start_alignment: int = DEFAULT_ALIGNMENT


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
        self._check_count(n_kv, 13, "metadata entries")  # smallest entry: 8-byte key length, 4-byte type, 1 byte
        self._check_count(n_tensors, 28, "tensors")  # smallest entry: name length, n_dims, one dim, type, offset
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            if key in metadata:
                raise ValueError(f"metadata key '{key}' appears twice")
            metadata[key] = self._keyed(key, lambda: self._value(self._scalar(_U32)))
        tensors = [self._tensor() for _ in range(n_tensors)]
        align = self._alignment(metadata)
        return RawHeader(version, metadata, tensors, -(-self.pos // align) * align, align)

    def _keyed(self, key: str, read):
        """Run `read`, prefixing any ValueError with the key it was reading."""
        try:
            return read()
        except ValueError as exc:
            raise ValueError(f"metadata key '{key}': {exc}") from None

    def _check_count(self, count: int, min_item_bytes: int, what: str) -> None:
        left = len(self.buf) - self.pos
        if count * min_item_bytes > left:
            raise ValueError(f"header claims {count} {what}, more than the {left} bytes left in the file can hold")

    def _alignment(self, metadata: dict[str, Any]) -> int:
        align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if type(align) is not int or align <= 0 or align & (align - 1) or align > 1 << 30:
            raise ValueError(f"general.alignment must be a power of two, got {align!r}")
        return align

    def _tensor(self) -> RawTensor:
        name = self._string()
        n_dims = self._scalar(_U32)
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        ne = tuple(self._scalar(_U64) for _ in range(n_dims))
        if any(not 1 <= d <= MAX_DIM for d in ne):
            raise ValueError(f"tensor {name} has dimensions {list(ne)}: each must be 1 to 2^62")
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

    def _strings(self, count: int) -> list[str]:
        """`count` strings in a row (a vocabulary, its merges): _string's checks in one local loop over bytes
        copied a window at a time, about half the time of `count` _string calls."""
        out: list = [None] * count
        length = _U64_STRUCT.unpack_from
        window = max(1 << 16, 32 * count)  # most tokens are short: one window usually holds the whole array
        base = self.pos
        data = bytes(self.buf[base : base + window])  # buf[base : base + len(data)]
        pos, have = 0, len(data)
        for i in range(count):
            if pos + 8 > have or pos + 8 + length(data, pos)[0] > have:  # rare: the next window
                base, pos = base + pos, 0
                n = _U64_STRUCT.unpack_from(self.buf, base)[0] if base + 8 <= len(self.buf) else -1
                if n < 0 or base + 8 + n > len(self.buf):
                    raise ValueError("string runs past the end of the file")
                window *= 2
                data = bytes(self.buf[base : base + 8 + n + window])
                have = len(data)
            stop = pos + 8 + length(data, pos)[0]
            out[i] = data[pos + 8 : stop].decode("utf-8", "surrogateescape")
            pos = stop
        self.pos = base + pos
        return out

    def _value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            return self._array()
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        return self._scalar(vtype)

    def _array(self, depth: int = 1) -> list[Any]:
        if depth > MAX_ARRAY_DEPTH:
            raise ValueError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
        etype, count = self._scalar(_U32), self._scalar(_U64)
        if etype == _STRING:
            self._check_count(count, 8, "strings")
            return self._strings(count)
        if etype == _ARRAY:
            self._check_count(count, 12, "arrays")
            return [self._array(depth + 1) for _ in range(count)]
        if etype not in _SCALARS:
            raise ValueError(f"unknown GGUF array element type {etype}")
        dtype = np.dtype(_SCALARS[etype][1])
        self._check_count(count, dtype.itemsize, "array elements")
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)  # one read, not count calls
        self.pos += count * dtype.itemsize
        return [bool(v) for v in values] if etype == _BOOL else values.tolist()
