"""An editable, byte-exact model of a GGUF header, for writing malformed files on purpose.

The `gguf` package's writer refuses most of what a hostile file does (duplicate keys, 0 or 9 dimensions,
offsets that overlap), so mutated files are written here: the header is re-serialised from typed entries and the
original data section is appended unchanged, so tensor offsets stay meaningful unless a mutation edits them.
A value can also be given as raw encoded bytes (`KV.raw`), e.g. 1000-deep nested arrays."""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

V = gguf.GGUFValueType
_FMT = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
        V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d"}


@dataclass
class KV:
    key: str
    vtype: int
    value: Any = None
    sub: int | None = None  # element type of an array
    raw: bytes | None = None  # encoded value (type id excluded) used instead of `value`


@dataclass
class Tensor:
    name: str
    ne: list[int]  # innermost first, as stored
    type_id: int
    rel_offset: int
    n_dims: int | None = None  # written instead of len(ne) when set (a lying count)


@dataclass
class Header:
    version: int
    kvs: list[KV]
    tensors: list[Tensor]
    data: bytes  # the data section, from the aligned end of the header to the end of the file
    alignment: int = 32
    n_kv: int | None = None  # counts written instead of the real ones when set
    n_tensors: int | None = None
    flips: list[tuple[int, int]] = field(default_factory=list)  # (byte, bit) of the serialised header to flip

    def clone(self) -> "Header":
        data, self.data = self.data, b""
        try:
            out = copy.deepcopy(self)
        finally:
            self.data = data
        out.data = data
        return out

    def kv(self, key: str) -> KV:
        return next(kv for kv in self.kvs if kv.key == key)

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    def write(self, path: Path) -> Path:
        head = bytearray(self.header_bytes())
        for pos, bit in self.flips:
            if pos < len(head):
                head[pos] ^= 1 << bit
        pad = -len(head) % self.alignment
        with open(path, "wb") as f:
            f.write(bytes(head) + b"\0" * pad)
            f.write(self.data)
        return path

    def header_bytes(self) -> bytes:
        out = [b"GGUF", struct.pack("<IQQ", self.version, _or(self.n_tensors, len(self.tensors)),
                                    _or(self.n_kv, len(self.kvs)))]
        for kv in self.kvs:
            out += [_string(kv.key), struct.pack("<I", kv.vtype),
                    kv.raw if kv.raw is not None else encode(kv.vtype, kv.value, kv.sub)]
        for t in self.tensors:
            n_dims = _or(t.n_dims, len(t.ne))
            out += [_string(t.name), struct.pack("<I", n_dims), b"".join(struct.pack("<Q", d % (1 << 64)) for d in t.ne),
                    struct.pack("<IQ", t.type_id, t.rel_offset % (1 << 64))]
        return b"".join(out)


def read_header(path: Path) -> Header:
    reader = gguf.GGUFReader(path)
    kvs = [_kv(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")]
    tensors = [Tensor(t.name, [int(d) for d in t.field.parts[3]], int(t.field.parts[4][0]), int(t.field.parts[5][0]))
               for t in reader.tensors]
    data = Path(path).read_bytes()[reader.data_offset:]
    return Header(int(reader.fields["GGUF.version"].contents()), kvs, tensors, data, reader.alignment)


def encode(vtype: int, value: Any, sub: int | None = None) -> bytes:
    if vtype == V.STRING:
        return _string(value)
    if vtype == V.ARRAY:
        items = b"".join(encode(sub, v) for v in value)
        return struct.pack("<IQ", sub, len(value)) + items
    return struct.pack(_FMT[V(vtype)], value)


def nested_arrays(depth: int) -> bytes:
    """An array of one array of one array ... `depth` levels, the innermost holding one u32."""
    inner = struct.pack("<IQI", V.UINT32, 1, 7)
    for _ in range(depth - 1):
        inner = struct.pack("<IQ", V.ARRAY, 1) + inner
    return inner


def _kv(f) -> KV:
    vtype = f.types[0]
    sub = f.types[1] if vtype == V.ARRAY and len(f.types) > 1 else None
    if vtype == V.ARRAY and sub is None:  # an empty array
        sub = V.UINT32
    return KV(f.name, int(vtype), f.contents(), int(sub) if sub is not None else None)


def _string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(data)) + data


def _or(value: int | None, default: int) -> int:
    return default if value is None else value % (1 << 64)
