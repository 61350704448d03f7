"""Where each (layer, expert)'s gate/up/down weights live in a GGUF, for both layouts found in real files:
merged `blk.L.ffn_gate_exps.weight` [E, F, D] and the older per-expert `blk.L.ffn_gate.E.weight` [F, D].

Read through the memory map (`--mmap`), a page past the end of a file that shrank after it was opened raises
SIGBUS and kills the process. So `acquire` checks the open file's size (fstat on a descriptor of our own, so a
file renamed over the path does not count) against the end of the expert bytes before handing out views, and a
truncated file is a GGUFFormatError instead. One fstat per layer; a truncation during a kernel call that has
already passed the check can still crash, which only a copy (the default cache path) rules out."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

from ..errors import GGUFFormatError
from ..formats.gguf import GGUFFile, TensorInfo
from ..formats.split import SHARD_BITS
from ..formats.weight import ExpertWeights, QuantWeight

PARTS = ("gate", "up", "down")


@dataclass(frozen=True)
class ExpertRange:
    """Bytes of one expert matrix in the file."""

    tensor: str
    offset: int
    nbytes: int


class ExpertStore:
    """Maps (layer, expert) to its three weight matrices, as memory-mapped views of the file."""

    def __init__(self, gguf: GGUFFile, n_layers: int, n_experts: int, layers: tuple[int, ...] | None = None):
        """n_layers: the model's layers (per-layer arrays are indexed by layer); layers: those with routed experts
        (default all; DeepSeek and GLM files start with dense layers)."""
        self.gguf, self.n_layers, self.n_experts = gguf, n_layers, n_experts
        self.layers = tuple(range(n_layers)) if layers is None else tuple(layers)
        if not self.layers:
            raise GGUFFormatError(f"{gguf.path}: the file has {n_experts} experts per layer but no layer with experts")
        first = self.layers[0]
        self.layout = "merged" if f"blk.{first}.ffn_gate_exps.weight" in gguf.tensors else "per-expert"
        self._check_present()
        # per file (a split model has several, formats/split.py): where its expert bytes end, and a descriptor
        self._ends: dict[int, int] = {}
        for name in self.tensor_names():
            info = gguf.tensors[name]
            shard, local = info.offset >> SHARD_BITS, info.offset & ((1 << SHARD_BITS) - 1)
            self._ends[shard] = max(self._ends.get(shard, 0), local + info.nbytes)
        paths = getattr(gguf, "paths", [gguf.path])
        self._fds = {shard: os.open(paths[shard], os.O_RDONLY) for shard in self._ends}
        for fd in self._fds.values():
            weakref.finalize(self, os.close, fd)
        self._paths = paths

    def tensor_names(self) -> set[str]:
        """Every tensor that belongs to a routed expert (so not resident)."""
        return {self._tensor_name(layer, part, e) for layer in self.layers
                for part in PARTS for e in self._experts_in_names()}

    @property
    def n_total(self) -> int:
        """Routed experts in the model (every MoE layer's)."""
        return len(self.layers) * self.n_experts

    def keys(self):
        """Every (layer, expert), layer by layer."""
        return ((layer, e) for layer in self.layers for e in range(self.n_experts))

    def get(self, layer: int, expert: int) -> ExpertWeights:
        return ExpertWeights(*(self._weight(layer, part, expert) for part in PARTS))

    def acquire(self, layer: int, experts: list[int]):
        """The ExpertSource protocol without a cache: one batch of views of the memory-mapped file."""
        self._check_size()
        yield [(i, self.get(layer, e)) for i, e in enumerate(experts)]

    def expert_types(self, layer: int) -> tuple | None:
        """(gate, up, down) quant types every expert of `layer` shares, or None where they differ (a per-expert file
        may mix): what a layer step checks, when the model is built, before it commits to native kernels."""
        types = {tuple(self._info(layer, part, e).qtype for part in PARTS) for e in self._experts_in_names()}
        return types.pop() if len(types) == 1 else None

    def _check_size(self) -> None:
        for shard, fd in self._fds.items():
            size, end = os.fstat(fd).st_size, self._ends[shard]
            if size < end:
                raise GGUFFormatError(
                    f"{self._paths[shard]}: the file shrank to {size} bytes while in use, but its experts end at byte "
                    f"{end} (truncated or rewritten in place?); reading them through the memory map would crash. "
                    f"Restore the file and start again"
                )

    def ranges(self, layer: int, expert: int) -> list[ExpertRange]:
        return [self._range(layer, part, expert) for part in PARTS]

    def expert_nbytes(self, layer: int, expert: int) -> int:
        return sum(r.nbytes for r in self.ranges(layer, expert))

    def total_nbytes(self) -> int:
        return sum(self.expert_nbytes(layer, e) for layer, e in self.keys())

    def _experts_in_names(self) -> range:
        return range(1) if self.layout == "merged" else range(self.n_experts)

    def _tensor_name(self, layer: int, part: str, expert: int) -> str:
        if self.layout == "merged":
            return f"blk.{layer}.ffn_{part}_exps.weight"
        return f"blk.{layer}.ffn_{part}.{expert}.weight"

    def _info(self, layer: int, part: str, expert: int) -> TensorInfo:
        return self.gguf.tensors[self._tensor_name(layer, part, expert)]

    def _weight(self, layer: int, part: str, expert: int) -> QuantWeight:
        info = self._info(layer, part, expert)
        raw = self.gguf.data(info.name)
        if self.layout == "merged":
            return QuantWeight(raw[expert], info.qtype, info.shape[1:])
        return QuantWeight(raw, info.qtype, info.shape)

    def _range(self, layer: int, part: str, expert: int) -> ExpertRange:
        info = self._info(layer, part, expert)
        if self.layout == "per-expert":
            return ExpertRange(info.name, info.offset, info.nbytes)
        size = info.nbytes // self.n_experts
        return ExpertRange(info.name, info.offset + expert * size, size)

    def _check_present(self) -> None:
        for layer in self.layers:
            for part in PARTS:
                for e in self._experts_in_names():
                    name = self._tensor_name(layer, part, e)
                    if name not in self.gguf.tensors:
                        raise GGUFFormatError(f"{self.gguf.path}: expert tensor {name} is missing")
                    self._check_shape(self.gguf.tensors[name])

    def _check_shape(self, info: TensorInfo) -> None:
        if self.layout == "merged" and (len(info.shape) != 3 or info.shape[0] != self.n_experts):
            raise GGUFFormatError(
                f"{self.gguf.path}: {info.name} has shape {info.shape}, expected [{self.n_experts}, rows, cols]"
            )
