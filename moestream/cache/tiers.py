"""The RAM tier: a fixed number of equal, page-aligned slots carved lazily out of a hard byte budget.

Slots are private anonymous mmaps (page-aligned, as O_DIRECT needs), allocated on first use and then recycled
forever; the pool never holds more than `budget` bytes. Slots ask for transparent huge pages (moestream/memory.py
says why)."""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import torch

from ..memory import anonymous


@dataclass
class Slot:
    index: int
    buf: mmap.mmap
    tensor: torch.Tensor  # uint8 [slot_size], shares memory with buf
    view: memoryview


class RamPool:
    def __init__(self, budget: int, slot_size: int, max_slots: int):
        self.budget, self.slot_size = budget, slot_size
        self.n_slots = min(budget // slot_size, max_slots)
        self._slots: list[Slot] = []
        self._free: list[Slot] = []

    @property
    def allocated_bytes(self) -> int:
        return len(self._slots) * self.slot_size

    @property
    def capacity_bytes(self) -> int:
        return self.n_slots * self.slot_size

    def take(self) -> Slot | None:
        """A free slot, a new one while under budget, or None (the caller must evict)."""
        if self._free:
            return self._free.pop()
        if len(self._slots) < self.n_slots:
            buf = anonymous(self.slot_size)
            slot = Slot(len(self._slots), buf, torch.frombuffer(buf, dtype=torch.uint8), memoryview(buf))
            self._slots.append(slot)
            return slot
        return None

    def give(self, slot: Slot) -> None:
        self._free.append(slot)

    @property
    def free_count(self) -> int:
        return len(self._free) + self.n_slots - len(self._slots)
