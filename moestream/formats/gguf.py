"""Read a GGUF file's metadata and tensor table through the `gguf` package, with checks that turn every
malformed file into a `GGUFFormatError` naming the problem. No torch here: tensor data are numpy views of a
read-only memory map, so opening a file larger than RAM costs nothing until bytes are touched."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

from ..errors import GGUFFormatError

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
        return int(np.prod(self.shape, dtype=np.int64))

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
        self._reader = _open_reader(self.path)
        self.metadata: dict[str, Any] = _read_metadata(self._reader)
        self.tensors: dict[str, TensorInfo] = _read_tensor_table(self._reader, self.file_size, self.path)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFFormatError(f"{self.path}: metadata key 'general.architecture' is missing")
        return arch

    def data(self, name: str) -> np.ndarray:
        """Raw bytes of a tensor as a uint8 view of the memory map, shape (rows..., row_bytes)."""
        info = self.tensors[name]
        raw = self._reader.data[info.offset : info.offset + info.nbytes]
        return raw.reshape(*info.shape[:-1], info.row_bytes)

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


class _TableReader(GGUFReader):
    """GGUFReader that keeps the raw tensor-info fields instead of building data views, so that we can check
    each entry ourselves and name the offending tensor (the base class fails with a bare numpy error)."""

    def _build_tensors(self, start_offs: int, fields: list) -> None:
        self.data_start = start_offs
        self.tensor_fields = fields
        self.tensors = []


def _open_reader(path: Path) -> _TableReader:
    try:
        return _TableReader(path, "r")
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as exc:
        # The gguf package reports truncation as index/value errors from numpy slicing past the end.
        raise GGUFFormatError(f"{path}: malformed or truncated GGUF header ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _read_metadata(reader: GGUFReader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out[name] = field.contents()
    return out


def _read_tensor_table(reader: _TableReader, file_size: int, path: Path) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for field in reader.tensor_fields:
        info = _tensor_info(field, reader.data_start, path)
        if info.name in tensors:
            raise GGUFFormatError(f"{path}: tensor {info.name} appears twice in the tensor table")
        _check_tensor(info, file_size, path)
        tensors[info.name] = info
    return tensors


def _tensor_info(field, data_start: int, path: Path) -> TensorInfo:
    _name_len, name_data, _n_dims, dims, raw_dtype, rel_offset = field.parts
    name = bytes(name_data).decode("utf-8", errors="replace")
    try:
        qtype = GGMLQuantizationType(int(raw_dtype[0]))
    except ValueError:
        raise GGUFFormatError(f"{path}: tensor {name} has unknown ggml type id {int(raw_dtype[0])}") from None
    shape = tuple(int(x) for x in reversed(dims.tolist()))
    block, type_size = GGML_QUANT_SIZES[qtype]
    nbytes = int(np.prod(shape, dtype=np.int64)) * type_size // block
    return TensorInfo(name, qtype, shape, data_start + int(rel_offset[0]), nbytes)


def _check_tensor(info: TensorInfo, file_size: int, path: Path) -> None:
    block, type_size = GGML_QUANT_SIZES[info.qtype]
    if info.shape[-1] % block:
        raise GGUFFormatError(
            f"{path}: tensor {info.name} has row length {info.shape[-1]}, not a multiple of "
            f"{info.qtype.name}'s block size {block}"
        )
    end = info.offset + info.nbytes
    if end > file_size:
        raise GGUFFormatError(
            f"{path}: tensor {info.name} spans bytes {info.offset}..{end} but the file has only {file_size} "
            f"bytes (truncated or corrupt file)"
        )
