"""Read a GGUF file's metadata and tensor table (quant types and sizes from the `gguf` package), with checks that
turn every malformed file into a `GGUFFormatError` naming the problem. No torch here: tensor data are numpy views of a
read-only memory map, so opening a file larger than RAM costs nothing until bytes are touched.

Tensor sizes are computed with Python integers (no int64 wrap-around: 2^62 x 4 elements is an error, not a
small number), and every tensor's data must start on `general.alignment`, end inside the file and overlap no
other tensor's: a table that lies about where data is would otherwise make two weights share bytes or read
past the end of the map."""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import GGUFFormatError
from ..memory import byte_array
from .gguf_parse import RawHeader, RawTensor, parse_header

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table. `shape` is row-major (torch order): ne reversed, so a linear weight with
    ne = [in, out] has shape (out, in) and a merged expert tensor ne = [D, F, E] has shape (E, F, D)."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (the innermost dimension) in this tensor's quant type."""
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.shape[-1] // block * type_size


class GGUFFile:
    """An open GGUF file: `metadata` (plain Python values), `tensors` (name -> TensorInfo), `data(name)`."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.file_size = _check_readable(self.path)
        self._data, header = _parse(self.path)
        self.version = header.version
        self.metadata: dict[str, Any] = header.metadata
        self.alignment = header.data_start_alignment
        self.tensors: dict[str, TensorInfo] = _read_tensor_table(header, self.file_size, self.path)
        self._views: dict[str, np.ndarray] = {}

    @property
    def paths(self) -> list[Path]:
        """The files holding the model (one here; formats/split.py has split models)."""
        return [self.path]

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFFormatError(f"{self.path}: metadata key 'general.architecture' is missing")
        return arch

    def data(self, name: str) -> np.ndarray:
        """Raw bytes of a tensor as a uint8 view of the memory map, shape (rows..., row_bytes). Views are
        cached: expert lookups ask for them every layer of every step."""
        view = self._views.get(name)
        if view is None:
            info = self.tensors[name]
            raw = self._data[info.offset : info.offset + info.nbytes]
            view = self._views[name] = raw.reshape(*info.shape[:-1], info.row_bytes)
        return view

    def read(self, name: str) -> np.ndarray:
        """A copy of a tensor's bytes, shape (rows..., row_bytes), read with pread rather than through the memory
        map, so no file pages stay mapped into (and counted in) this process's memory."""
        info = self.tensors[name]
        out = byte_array(info.nbytes)  # huge pages when large: the kernels stream it
        got = 0
        with open(self.path, "rb", buffering=0) as f:
            while got < info.nbytes:  # one read returns at most ~2 GiB
                n = os.preadv(f.fileno(), [memoryview(out)[got:]], info.offset + got)
                if n == 0:
                    break
                got += n
            os.posix_fadvise(f.fileno(), info.offset, info.nbytes, os.POSIX_FADV_DONTNEED)
        if got != info.nbytes:
            raise GGUFFormatError(f"{self.path}: tensor {info.name} is cut short (file truncated?)")
        return out.reshape(*info.shape[:-1], info.row_bytes)

    def release_pages(self) -> None:
        """Drop mapped file pages from this process (they are re-read if a memory-mapped view is used again)."""
        self._data._mmap.madvise(mmap.MADV_DONTNEED)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


def _check_readable(path: Path) -> int:
    if not path.exists():
        raise GGUFFormatError(f"{path}: no such file")
    if not path.is_file():
        raise GGUFFormatError(f"{path}: not a regular file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"{path}: not a GGUF file (magic is {magic!r}, expected {GGUF_MAGIC!r})")
    return size


def _parse(path: Path) -> tuple[np.memmap, RawHeader]:
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        return data, parse_header(memoryview(data))  # memoryview slices are ~3x cheaper than memmap slices
    except (ValueError, IndexError, KeyError, OverflowError, struct.error) as exc:
        raise GGUFFormatError(f"{path}: malformed or truncated GGUF header ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _read_tensor_table(header: RawHeader, file_size: int, path: Path) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for raw in header.tensors:
        info = _tensor_info(raw, header.data_start, path)
        if info.name in tensors:
            raise GGUFFormatError(f"{path}: tensor {info.name} appears twice in the tensor table")
        _check_tensor(info, raw.rel_offset, header.data_start_alignment, file_size, path)
        tensors[info.name] = info
    _check_no_overlap(list(tensors.values()), path)
    return tensors


def _tensor_info(raw: RawTensor, data_start: int, path: Path) -> TensorInfo:
    try:
        qtype = GGMLQuantizationType(raw.type_id)
    except ValueError:
        raise GGUFFormatError(f"{path}: tensor {raw.name} has unknown ggml type id {raw.type_id}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise GGUFFormatError(f"{path}: tensor {raw.name} has ggml type {qtype.name}, which has no known block size")
    shape = tuple(reversed(raw.ne))
    block, type_size = GGML_QUANT_SIZES[qtype]
    nbytes = math.prod(shape) // block * type_size  # Python ints: exact however large (checked against the file)
    return TensorInfo(raw.name, qtype, shape, data_start + raw.rel_offset, nbytes)


def _check_tensor(info: TensorInfo, rel_offset: int, alignment: int, file_size: int, path: Path) -> None:
    block, type_size = GGML_QUANT_SIZES[info.qtype]
    if info.shape[-1] % block:
        raise GGUFFormatError(
            f"{path}: tensor {info.name} has row length {info.shape[-1]}, not a multiple of "
            f"{info.qtype.name}'s block size {block}"
        )
    if rel_offset % alignment:
        raise GGUFFormatError(
            f"{path}: tensor {info.name} starts at data offset {rel_offset}, not a multiple of the file's "
            f"alignment {alignment} (corrupt tensor table)"
        )
    end = info.offset + info.nbytes
    if end > file_size:
        raise GGUFFormatError(
            f"{path}: tensor {info.name} spans bytes {info.offset}..{end} but the file has only {file_size} "
            f"bytes (truncated or corrupt file)"
        )


def _check_no_overlap(infos: list[TensorInfo], path: Path) -> None:
    ordered = sorted(infos, key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.nbytes > b.offset:
            raise GGUFFormatError(
                f"{path}: tensors {a.name} (bytes {a.offset}..{a.offset + a.nbytes}) and {b.name} (from "
                f"{b.offset}) overlap (corrupt tensor table)"
            )
