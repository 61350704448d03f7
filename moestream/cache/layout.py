"""Where each expert's three matrices sit inside one cache slot, and which aligned file ranges fill them.

A slot holds gate, up and down back to back, each starting at a 4 KiB boundary; each matrix is read as the aligned
file range around it and sliced (`head` bytes of padding before it). Every slot has the size of the largest expert,
so slots are interchangeable and recycled without reallocation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gguf import GGMLQuantizationType

from ..formats.weight import ExpertWeights, QuantWeight
from ..store.experts import PARTS, ExpertStore
from ..store.reader import Chunk, align_down, align_up


@dataclass(frozen=True)
class Segment:
    file_start: int  # aligned
    read_len: int  # aligned
    slot_pos: int  # aligned
    head: int  # data starts at slot_pos + head
    nbytes: int
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]

    def chunks(self, slot_view: memoryview, chunk_bytes: int) -> list[Chunk]:
        data_end = self.head + self.nbytes
        return [Chunk(self.file_start + i, slot_view[self.slot_pos + i:self.slot_pos + min(i + chunk_bytes, self.read_len)],
                      max(0, min(chunk_bytes, data_end - i)))
                for i in range(0, self.read_len, chunk_bytes)]

    def weight(self, slot: torch.Tensor) -> QuantWeight:
        start = self.slot_pos + self.head
        raw = slot[start:start + self.nbytes].view(self.shape[0], self.nbytes // self.shape[0])
        return QuantWeight(raw, self.qtype, self.shape)


class SlotLayout:
    """(layer, expert) -> three Segments; `slot_size` is the largest expert's aligned footprint."""

    def __init__(self, store: ExpertStore):
        self.store = store
        self._segments = {(layer, e): self._place(layer, e)
                          for layer, e in store.keys()}
        self.slot_size = max(s[-1].slot_pos + s[-1].read_len for s in self._segments.values())

    def segments(self, layer: int, expert: int) -> tuple[Segment, ...]:
        return self._segments[(layer, expert)]

    def chunks(self, layer: int, expert: int, slot_view: memoryview, chunk_bytes: int) -> list[Chunk]:
        return [c for s in self.segments(layer, expert) for c in s.chunks(slot_view, chunk_bytes)]

    def data(self, layer: int, expert: int, slot_view: memoryview) -> list[memoryview]:
        """The expert's own bytes in its slot (gate, up, down), without the alignment padding read around them."""
        return [slot_view[s.slot_pos + s.head:s.slot_pos + s.head + s.nbytes] for s in self.segments(layer, expert)]

    def weights(self, layer: int, expert: int, slot: torch.Tensor) -> ExpertWeights:
        return ExpertWeights(*(s.weight(slot) for s in self.segments(layer, expert)))

    def _place(self, layer: int, expert: int) -> tuple[Segment, ...]:
        out, pos = [], 0
        for part, rng in zip(PARTS, self.store.ranges(layer, expert)):
            info = self.store.gguf.tensors[rng.tensor]
            start = align_down(rng.offset)
            length = align_up(rng.offset + rng.nbytes) - start
            shape = info.shape[1:] if self.store.layout == "merged" else info.shape
            out.append(Segment(start, length, pos, rng.offset - start, rng.nbytes, info.qtype, tuple(shape)))
            pos += length
        return tuple(out)
