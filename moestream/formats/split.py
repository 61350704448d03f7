"""Split GGUF files (`name-00001-of-00005.gguf`, as llama.cpp's gguf-split and gguf-py's writer write them): the
first shard holds the metadata, every shard a part of the tensor table (`split.no`, `split.count`,
`split.tensors.count`). `open_gguf(any shard)` returns one object with GGUFFile's interface over all of them.

One address space for every shard: a tensor's `offset` is its shard's index << SHARD_BITS plus its offset in that
file, so the expert store, the slot layout and the readers keep working with one offset per byte, and the readers
turn it back into (file, offset) (store/reader.py `locate`). A read never crosses from one shard into the next: a
tensor lies in one shard, and the 2^48-byte gap between shards holds any alignment padding past a shard's end."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GGUFFormatError
from .gguf import GGUFFile, TensorInfo

SHARD_BITS = 48  # 256 TiB per shard
SHARD_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def open_gguf(path: str | os.PathLike[str]) -> "GGUFFile | SplitGGUF":
    """The file, or, for a shard of a split model, every shard as one (whichever shard `path` names)."""
    first = GGUFFile(path)
    count = first.get("split.count", 0)
    if count in (0, 1) and first.get("split.no", 0) == 0:  # not split, or a "split" of one file
        return first
    return SplitGGUF(Path(path), first)


def shard_paths(path: Path, count: int) -> list[Path]:
    m = SHARD_NAME.match(path.name)
    if not m:
        raise GGUFFormatError(f"{path}: the file is a shard of a split model (split.count {count}) but its name is "
                              f"not NAME-NNNNN-of-{count:05d}.gguf, so the other shards cannot be found")
    if int(m["count"]) != count:
        raise GGUFFormatError(f"{path}: its name says {int(m['count'])} shards, its metadata split.count {count}")
    return [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


class SplitGGUF:
    """GGUFFile's interface (path, file_size, metadata, alignment, tensors, data, read, release_pages, get,
    architecture) over every shard; `shards` are the files in order."""

    def __init__(self, given: Path, opened: GGUFFile):
        count = opened.get("split.count")
        if type(count) is not int or not 1 <= count <= 99999:
            raise GGUFFormatError(f"{given}: metadata key 'split.count' is {count!r}; it must be 1..99999")
        paths = shard_paths(given, count)
        self.shards = [opened if p == given else _open_shard(p, given) for p in paths]
        for i, shard in enumerate(self.shards):
            _check_shard(shard, i, count)
        head = self.shards[0]
        self.path, self.version, self.alignment = head.path, head.version, head.alignment
        self.metadata: dict[str, Any] = head.metadata
        self.file_size = sum(s.file_size for s in self.shards)
        self.tensors: dict[str, TensorInfo] = {}
        self._shard_of: dict[str, int] = {}
        for i, shard in enumerate(self.shards):
            for name, info in shard.tensors.items():
                if name in self.tensors:
                    raise GGUFFormatError(f"{shard.path}: tensor {name} is also in "
                                          f"{self.shards[self._shard_of[name]].path.name}")
                self.tensors[name] = replace(info, offset=(i << SHARD_BITS) + info.offset)
                self._shard_of[name] = i
        expected = head.get("split.tensors.count")
        if type(expected) is int and expected != len(self.tensors):
            raise GGUFFormatError(f"{head.path}: split.tensors.count is {expected}, but the {count} shards hold "
                                  f"{len(self.tensors)} tensors")

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.shards]

    @property
    def architecture(self) -> str:
        return self.shards[0].architecture

    def data(self, name: str) -> np.ndarray:
        return self.shards[self._shard_of[name]].data(name)

    def read(self, name: str) -> np.ndarray:
        return self.shards[self._shard_of[name]].read(name)

    def release_pages(self) -> None:
        for s in self.shards:
            s.release_pages()

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


def _open_shard(path: Path, given: Path) -> GGUFFile:
    if not path.exists():
        raise GGUFFormatError(f"{path}: shard missing (the split model {given.name} belongs to needs it); download "
                              f"every shard into the same directory")
    return GGUFFile(path)


def _check_shard(shard: GGUFFile, index: int, count: int) -> None:
    no, n = shard.get("split.no"), shard.get("split.count")
    if no != index or n != count:
        raise GGUFFormatError(f"{shard.path}: split.no {no!r} of split.count {n!r}, but by its name it is shard "
                              f"{index + 1} of {count} (split.no {index}): shards of different models mixed?")
