"""The prompt cache's disk tier (`--prompt-cache-dir DIR`): every block the RAM tier stores is also written to a
file, so prefixes survive a restart; a block missing from RAM is read back from its file on lookup.

Layout: DIR/<model key>/<block hash>.kvb, one block per file: a little-endian u32 header length, a JSON header
(parent hash, tokens, per-layer shapes, dtype), then every layer's K then V rows as raw bytes. The model key
hashes the file's first 16 MiB (GGUF header, metadata, tensor table) and its size, with the moestream and torch
versions and the KV layout, so rows are never reused by another model or another build's numerics. Files are
written by a background thread (a block of a large model is tens of MB) to a temporary name and renamed, so a
crash leaves whole files or none; a file that does not parse is deleted and counts as a miss. The directory is
kept under its own byte budget by deleting the least recently used files (access time is set on every read)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__ as MOESTREAM_VERSION
from ..errors import ConfigError

SUFFIX = ".kvb"
HEAD = struct.Struct("<I")
KEY_BYTES = 16 << 20


@dataclass
class DiskEntry:
    parent: bytes | None
    tokens: tuple[int, ...]
    nbytes: int
    path: Path


def model_key(model_path: Path, layout: tuple) -> str:
    """A name for the model file's identity, this build and its KV layout."""
    h = hashlib.blake2b(digest_size=12)
    size = model_path.stat().st_size
    with open(model_path, "rb") as f:
        h.update(f.read(KEY_BYTES))
    h.update(repr((size, MOESTREAM_VERSION, torch.__version__, layout)).encode())
    return h.hexdigest()


class PromptDisk:
    def __init__(self, root: Path, key: str, budget: int):
        self.dir = Path(root) / key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--prompt-cache-dir {root}: cannot create {self.dir}: {exc.strerror or exc}") from None
        self.budget = budget
        self.index: dict[bytes, DiskEntry] = {}
        self.children: dict[bytes | None, set[bytes]] = {}
        self.bytes = 0
        self._writes: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._scan()
        self._writer = threading.Thread(target=self._write_loop, name="moestream-prompt-disk", daemon=True)
        self._writer.start()

    # --- reads (engine thread) ------------------------------------------------------------------------------------

    def load(self, key: bytes) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """The block's (k per layer, v per layer), or None when its file is gone or unreadable."""
        with self._lock:
            entry = self.index.get(key)
        if entry is None:
            return None
        try:
            rows = _read(entry.path)
            os.utime(entry.path)
            return rows
        except (OSError, ValueError, KeyError, struct.error):
            self._forget(key, delete=True)
            return None

    def children_of(self, parent: bytes | None) -> list[tuple[bytes, DiskEntry]]:
        with self._lock:
            return [(k, self.index[k]) for k in self.children.get(parent, ()) if k in self.index]

    # --- writes (queued) ------------------------------------------------------------------------------------------

    def save(self, key: bytes, parent: bytes | None, tokens: tuple[int, ...], k: list[torch.Tensor],
             v: list[torch.Tensor]) -> None:
        with self._lock:
            if key in self.index:
                return
        self._writes.put((key, parent, tokens, k, v))

    def flush(self) -> None:
        """Wait until every queued block is on disk (tests, shutdown)."""
        self._writes.join()

    def _write_loop(self) -> None:
        while True:
            key, parent, tokens, k, v = self._writes.get()
            try:
                self._write(key, parent, tokens, k, v)
            except OSError:  # a full or failing disk costs the cache a block, never the request
                pass
            finally:
                self._writes.task_done()

    def _write(self, key: bytes, parent: bytes | None, tokens, k, v) -> None:
        path = self.dir / (key.hex() + SUFFIX)
        head = json.dumps({"parent": parent.hex() if parent else None, "tokens": list(tokens),
                           "k": [list(t.shape) for t in k], "v": [list(t.shape) for t in v]}).encode()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(HEAD.pack(len(head)) + head)
            for t in k + v:
                f.write(t.contiguous().numpy().tobytes())
        os.replace(tmp, path)
        with self._lock:
            self._index(key, DiskEntry(parent, tuple(tokens), path.stat().st_size, path))
        self._trim()

    # --- bookkeeping ----------------------------------------------------------------------------------------------

    def _scan(self) -> None:
        for path in self.dir.glob("*" + SUFFIX):
            try:
                head = _header(path)
                key = bytes.fromhex(path.stem)
                parent = bytes.fromhex(head["parent"]) if head["parent"] else None
                self._index(key, DiskEntry(parent, tuple(head["tokens"]), path.stat().st_size, path))
            except (OSError, ValueError, KeyError, struct.error):
                path.unlink(missing_ok=True)
        for tmp in self.dir.glob("*.tmp"):  # a write cut off by a crash
            tmp.unlink(missing_ok=True)
        self._trim()

    def _index(self, key: bytes, entry: DiskEntry) -> None:
        self.index[key] = entry
        self.children.setdefault(entry.parent, set()).add(key)
        self.bytes += entry.nbytes

    def _forget(self, key: bytes, delete: bool) -> None:
        with self._lock:
            entry = self.index.pop(key, None)
            if entry is None:
                return
            self.children.get(entry.parent, set()).discard(key)
            self.bytes -= entry.nbytes
        if delete:
            entry.path.unlink(missing_ok=True)

    def _trim(self) -> None:
        if self.bytes <= self.budget:
            return
        with self._lock:
            by_age = sorted(self.index.items(), key=lambda kv: _atime(kv[1].path))
        for key, _ in by_age:
            if self.bytes <= self.budget:
                break
            self._forget(key, delete=True)


def _atime(path: Path) -> float:
    try:
        st = path.stat()
        return max(st.st_atime, st.st_mtime)
    except OSError:
        return 0.0


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = HEAD.unpack(f.read(HEAD.size))
        return json.loads(f.read(n))


def _read(path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    data = path.read_bytes()
    (n,) = HEAD.unpack_from(data)
    head = json.loads(data[HEAD.size: HEAD.size + n])
    pos, tensors = HEAD.size + n, []
    for shape in head["k"] + head["v"]:
        count = 1
        for d in shape:
            count *= d
        chunk = data[pos: pos + 4 * count]
        if len(chunk) != 4 * count:
            raise ValueError(f"{path.name}: truncated")
        tensors.append(torch.frombuffer(bytearray(chunk), dtype=torch.float32).reshape(shape))
        pos += 4 * count
    half = len(head["k"])
    return tensors[:half], tensors[half:]
