"""How much memory a run needs, and the RAM budget for experts that fits a machine: the arithmetic behind
`moestream plan`, `--ram-budget auto` and the memory limits in deploy/. Pure functions of stated facts (no I/O)
so that every rule is testable with any numbers.

A process needs: the resident weights (read into RAM at load), the expert cache's budget (whole slots), the KV
cache of the sequences it runs at once at full context, and the runtime (`RUNTIME_BYTES`: Python, torch, the
tokenizer, the HTTP server and per-step scratch; an idle `serve` of the embedded model measured 253 MiB RSS here,
doubled for activations and request buffers). The budget it may take is what the machine has free (MemAvailable,
or less under a memory cgroup limit) less all of that and `OS_RESERVE`: room for the page cache that the
resident weights' reads and the rest of the system fill (expert reads bypass it with O_DIRECT)."""

from __future__ import annotations

from dataclasses import dataclass

RUNTIME_BYTES = 512 << 20
OS_RESERVE = 256 << 20
KV_BYTES_PER_VALUE = 4  # the KV cache holds float32 keys and values (engine/kv_cache.py)


@dataclass(frozen=True)
class ModelSize:
    """What sizing needs to know of a model (engine.inspect_file gives it: see `model_size`)."""

    resident_bytes: int  # weights kept in RAM
    expert_slots: int  # routed experts in the file (a slot each in the cache)
    slot_bytes: int  # one cached expert's slot (its gate, up and down, page-aligned)
    experts_per_token: int  # top-k: slots one layer of one token needs at once
    kv_bytes_per_token: int  # all layers' keys and values for one token


@dataclass(frozen=True)
class Machine:
    """free_bytes: MemAvailable now; cgroup_room: a memory cgroup's limit less its usage now, or None;
    own_bytes: this process's RSS now (already used, so the part of RUNTIME_BYTES it covers is not free memory
    the budget must leave: Python and torch are loaded when sizing runs)."""

    free_bytes: int
    cgroup_room: int | None = None
    own_bytes: int = 0

    @property
    def room(self) -> int:
        return self.free_bytes if self.cgroup_room is None else min(self.free_bytes, self.cgroup_room)


def kv_bytes_per_token(args) -> int:
    """args: ModelArgs. Keys and values of every layer for one token (MLA keeps the latent and the rotated key)."""
    heads, k_dim, v_dim = (1, args.kv_lora_rank, args.rope_dim) if args.kv_lora_rank else \
        (args.n_kv_heads, args.head_dim, args.head_dim)
    return args.n_layers * heads * (k_dim + v_dim) * KV_BYTES_PER_VALUE


def kv_bytes(size: ModelSize, context: int, sequences: int) -> int:
    return size.kv_bytes_per_token * context * sequences


def fixed_bytes(size: ModelSize, context: int, sequences: int) -> int:
    """Everything but the expert cache: resident weights, KV at full context, the runtime."""
    return size.resident_bytes + kv_bytes(size, context, sequences) + RUNTIME_BYTES


def whole_slots(size: ModelSize, budget: int) -> int:
    """The budget as the cache uses it: whole slots, at most one per expert."""
    return min(budget // size.slot_bytes, size.expert_slots) * size.slot_bytes


def memory_need(size: ModelSize, budget: int, context: int, sequences: int = 1) -> int:
    """Bytes a process with this expert budget needs at most (a container's memory limit: add OS_RESERVE)."""
    return fixed_bytes(size, context, sequences) + whole_slots(size, budget)


def auto_budget(size: ModelSize, machine: Machine, context: int, sequences: int = 1) -> int:
    """Every expert when they fit, else the whole slots the machine has room for after the fixed needs and
    OS_RESERVE; never more. May be below one token's experts (the caller refuses that: `check_fits`)."""
    spare = machine.room + min(machine.own_bytes, RUNTIME_BYTES) - fixed_bytes(size, context, sequences) - OS_RESERVE
    return whole_slots(size, max(spare, 0))


def minimum_budget(size: ModelSize) -> int:
    """One layer's top-k experts for one token: the least budget a run can go on with."""
    return size.experts_per_token * size.slot_bytes
