"""Where to compute one routed expert on a machine with a GPU, and the VRAM tier's bookkeeping (pure: no I/O, no
CUDA; the GPU tier feeds them measured numbers, the tests fixed ones).

An expert in VRAM runs there. One in RAM but not in VRAM either crosses the link first (copy-up: PCIe bytes plus
the GPU's FFN, paid once and amortised over the uses it is expected to get while it stays in VRAM) or runs on the
CPU where it is (as Fiddler and ktransformers do): whichever the measured costs say is cheaper for this many
rows. One in neither is read from disk into RAM first; the read costs the same either way, so the choice after
it is the RAM case. Why per expert and per step: decode (1-4 rows) favours the CPU for a cold expert on a slow
link, prefill (hundreds of rows) favours the copy, and a hot expert's copy pays for itself over its reuses."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

GPU, COPY_UP, CPU = "gpu", "copy-up", "cpu"


@dataclass(frozen=True)
class Costs:
    """Measured on the machine: bandwidth and per-call latency of host-to-device copies, and each device's expert
    FFN time as fixed + per-row seconds (one expert of the model's size)."""

    pcie_Bps: float
    copy_latency_s: float
    gpu_fixed_s: float
    gpu_per_row_s: float
    cpu_fixed_s: float
    cpu_per_row_s: float

    def gpu_s(self, rows: int) -> float:
        return self.gpu_fixed_s + rows * self.gpu_per_row_s

    def cpu_s(self, rows: int) -> float:
        return self.cpu_fixed_s + rows * self.cpu_per_row_s

    def copy_s(self, nbytes: int) -> float:
        return self.copy_latency_s + nbytes / self.pcie_Bps


def place(in_vram: bool, nbytes: int, rows: int, costs: Costs, expected_uses: float = 1.0) -> str:
    """GPU for a VRAM hit; else COPY_UP or CPU, by cost. expected_uses: how many steps (this one included) the
    expert is expected to serve from VRAM once copied (>= 1; from the predictor or its recent routing count)."""
    if in_vram:
        return GPU
    uses = max(1.0, expected_uses)
    copy_up = costs.copy_s(nbytes) / uses + costs.gpu_s(rows)
    return COPY_UP if copy_up < costs.cpu_s(rows) else CPU


@dataclass
class TierStats:
    lookups: int = 0
    vram_hits: int = 0
    ram_hits: int = 0
    disk_reads: int = 0
    copies_up: int = 0
    cpu_computed: int = 0
    bytes_copied: int = 0
    vram_evictions: int = 0


@dataclass
class VramBook:
    """The VRAM tier: whole-expert slots within a byte budget, least recently used out first. Inclusive: an
    expert evicted from VRAM still has its RAM copy (the RAM tier decides separately when that goes), so eviction
    here is dropping a device buffer, never a write-back."""

    budget_bytes: int
    slot_bytes: int
    _lru: OrderedDict = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.slot_bytes <= 0 or self.budget_bytes < 0:
            raise ValueError("slot_bytes must be > 0 and budget_bytes >= 0")

    @property
    def slots(self) -> int:
        return self.budget_bytes // self.slot_bytes

    @property
    def used_bytes(self) -> int:
        return len(self._lru) * self.slot_bytes

    def __contains__(self, key) -> bool:
        return key in self._lru

    def touch(self, key) -> None:
        self._lru.move_to_end(key)

    def admit(self, key) -> list:
        """Give `key` a slot (most recent) -> the keys evicted to make room; [] when it cannot have one."""
        if key in self._lru:
            self.touch(key)
            return []
        if self.slots == 0:
            return []
        evicted = []
        while len(self._lru) >= self.slots:
            evicted.append(self._lru.popitem(last=False)[0])
        self._lru[key] = True
        return evicted


def step(book: VramBook, ram: set, key, nbytes: int, rows: int, costs: Costs, stats: TierStats,
         expected_uses: float = 1.0) -> str:
    """One lookup through both tiers (the accounting the GPU tier keeps): -> where it was computed."""
    stats.lookups += 1
    if key in book:
        stats.vram_hits += 1
        book.touch(key)
        return GPU
    if key in ram:
        stats.ram_hits += 1
    else:
        stats.disk_reads += 1
        ram.add(key)
    where = place(False, nbytes, rows, costs, expected_uses)
    if where == COPY_UP and book.slots:
        stats.vram_evictions += len(book.admit(key))
        stats.copies_up += 1
        stats.bytes_copied += nbytes
        return COPY_UP
    stats.cpu_computed += 1
    return CPU
