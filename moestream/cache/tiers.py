"""The RAM tier: a fixed number of equal, page-aligned slots carved out of a hard byte budget.

Slots are private anonymous mmaps (page-aligned, as O_DIRECT needs), recycled forever; the pool never holds more
than `budget` bytes. Slots ask for transparent huge pages (moestream/memory.py says why).

A fresh slot's first touch costs page faults: measured 8-32 ms per 23.6 MiB slot here (zeroing, and compaction
for huge pages). An O_DIRECT read pins its destination, so those faults happened inside the decode thread's
io_uring submit, which took 14 % of a DeepSeek-shaped decode while the cache filled (docs/benchmarks.md).
`start_warming` allocates and faults in the slots not yet made in a background thread instead (madvise
MADV_POPULATE_WRITE through ctypes, which runs without the GIL); `take` hands those out first and still makes its
own when none is ready."""

from __future__ import annotations

import ctypes
import mmap
import threading
from dataclasses import dataclass

import torch

from ..memory import anonymous


MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault a range in writable, as a first write would, in one call
_LIBC = ctypes.CDLL(None, use_errno=True)


def _fault_in(buf: mmap.mmap, size: int) -> None:
    """Every page of buf present and writable. Through ctypes, so the GIL is released meanwhile; an older kernel
    without MADV_POPULATE_WRITE gets a memset (the same faults, and a write of every byte)."""
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if _LIBC.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_POPULATE_WRITE) != 0:
        ctypes.memset(addr, 0, size)


@dataclass
class Slot:
    index: int
    buf: mmap.mmap
    tensor: torch.Tensor  # uint8 [slot_size], shares memory with buf
    view: memoryview


class RamPool:
    def __init__(self, budget: int, slot_size: int, max_slots: int):
        self.budget, self.slot_size, self.max_slots = budget, slot_size, max_slots
        self.n_slots = min(budget // slot_size, max_slots)
        self._slots: list[Slot] = []
        self._free: list[Slot] = []
        self._warm: list[Slot] = []  # made and faulted in by the warming thread, never handed out yet
        self._warming = 0  # slots the warming thread is faulting in right now (counted against the budget)
        self._cond = threading.Condition()  # guards _slots, _warm, _warming: the warming thread changes them
        self._stop = threading.Event()
        self._warmer: threading.Thread | None = None

    def start_warming(self) -> None:
        """Make and fault in the remaining slots in the background (daemon thread; `stop_warming` ends it)."""
        if self._warmer is None and len(self._slots) < self.n_slots:
            self._warmer = threading.Thread(target=self._warm_all, name="moestream-slot-warm", daemon=True)
            self._warmer.start()

    def stop_warming(self) -> None:
        self._stop.set()
        if self._warmer is not None:
            self._warmer.join()

    def _warm_all(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                slot = self._new_slot()
                if slot is None:
                    return
                self._warming += 1
            _fault_in(slot.buf, self.slot_size)
            with self._cond:
                self._warming -= 1
                self._warm.append(slot)
                self._cond.notify_all()

    def _new_slot(self) -> Slot | None:
        """A new slot while under the budget (caller holds _cond)."""
        if len(self._slots) >= self.n_slots:
            return None
        buf = anonymous(self.slot_size)
        slot = Slot(len(self._slots), buf, torch.frombuffer(buf, dtype=torch.uint8), memoryview(buf))
        self._slots.append(slot)
        return slot

    @property
    def allocated_bytes(self) -> int:
        return len(self._slots) * self.slot_size

    @property
    def capacity_bytes(self) -> int:
        return self.n_slots * self.slot_size

    def take(self) -> Slot | None:
        """A free slot, a warmed one, a new one while under budget, or None (the caller must evict). When the
        budget's last slots are being faulted in by the warming thread, it waits for one (milliseconds)."""
        if self._free:
            return self._free.pop()
        with self._cond:
            while True:
                if self._warm:
                    return self._warm.pop(0)
                slot = self._new_slot()
                if slot is not None or self._warming == 0:
                    return slot
                self._cond.wait()

    def give(self, slot: Slot) -> None:
        """Back to the pool; dropped instead while a shrunk budget is still exceeded (`resize`)."""
        with self._cond:
            if len(self._slots) > self.n_slots:
                self._forget(slot)  # its memory goes back to the OS with the last reference
                return
        self._free.append(slot)

    def resize(self, budget: int) -> None:
        """A new byte budget: growing makes room at once (the new slots are warmed in the background); shrinking
        drops free slots now, and the caller evicts until `excess_slots` is 0 (each evicted slot given back is
        dropped)."""
        with self._cond:
            self.budget = budget
            self.n_slots = min(budget // self.slot_size, self.max_slots)
            while len(self._slots) > self.n_slots and (self._free or self._warm):
                self._forget(self._free.pop() if self._free else self._warm.pop())
        if len(self._slots) < self.n_slots and (self._warmer is None or not self._warmer.is_alive()):
            self._warmer = None
            self.start_warming()

    def _forget(self, slot: Slot) -> None:
        """Drop `slot` from the pool (caller holds _cond); by identity: a Slot's fields hold tensors."""
        self._slots = [s for s in self._slots if s is not slot]

    @property
    def excess_slots(self) -> int:
        """Slots held beyond the budget after it shrank (in use by cached experts)."""
        with self._cond:
            return max(0, len(self._slots) - self.n_slots)

    @property
    def free_count(self) -> int:
        with self._cond:
            return len(self._free) + len(self._warm) + self.n_slots - len(self._slots)
