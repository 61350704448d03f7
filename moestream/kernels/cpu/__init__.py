"""Native CPU kernels (plain C extension built with the package). `available()` is False when the extension
could not be built or loaded; callers then use kernels.reference.

Every wrapper checks what it hands to C: C gets bare pointers and sizes, so a wrong dtype, a strided view, a
short byte buffer, a short offsets array or a row index out of range would read or write past memory (or compute
on garbage) instead of failing. The split keeps the checks to a few microseconds per call (measured): Python checks
what C cannot see (dtypes, layouts, devices, shapes, byte sizes, array lengths, one set of types and shapes per
call); C checks the values it loops over anyway (offsets rising from 0, spans and row indices in range) before it
touches a buffer, and when C refuses them Python says which value was wrong. Errors are KernelInputError, never
`assert` (which `python -O` removes)."""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES

from ...errors import KernelInputError
from ...formats import packed as packed_layout
from ...memory import byte_tensor
from ...formats.weight import ExpertWeights, QuantWeight

try:
    from . import _native
except ImportError:  # not built (e.g. a source checkout without a compiler)
    _native = None

INT_MAX = 2**31 - 1  # the C side takes sizes as int
PACKED_BASE = 64  # C's id of a packed layout: this + the GGUF type (csrc/kernels.h, GT_PACKED)
PARTS = ("gate", "up", "down")


class NativeClock:
    """Seconds spent inside native calls (so benchmarks can report the Python/torch time around them)."""

    seconds = 0.0
    calls = 0

    @classmethod
    def timed(cls, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        cls.seconds += time.perf_counter() - t0
        cls.calls += 1
        return result


def available() -> bool:
    return _native is not None and not os.environ.get("MOESTREAM_NO_NATIVE")


def native_steps_enabled() -> bool:
    """Whether layers may run their fused native steps (attention, MoE); MOESTREAM_NO_NATIVE_STEP=1 keeps the
    PyTorch path (with the native matmuls) so that both can be measured in one run. Read on every call."""
    return available() and not os.environ.get("MOESTREAM_NO_NATIVE_STEP")


@functools.cache
def kernel_table() -> dict[int, tuple[str, int]]:
    """{ggml type id: (tier, activation kind)}; fixed once the extension is loaded."""
    return _native.kernel_table() if _native else {}


def supports(qtype) -> bool:
    return available() and int(qtype) in kernel_table()


def native_type(w: QuantWeight) -> int:
    """The id C knows `w`'s bytes by: its GGUF type, or that type's packed layout."""
    return int(w.qtype) + (PACKED_BASE if w.packed else 0)


def can_pack(w: QuantWeight) -> bool:
    """A weight in RAM (a torch tensor; a memory map stays as the file has it) whose type and rows pack."""
    return (available() and not w.packed and isinstance(w.raw, torch.Tensor) and packed_layout.packable(w.qtype, w.shape)
            and int(w.qtype) + PACKED_BASE in kernel_table())


def pack(w: QuantWeight, n_threads: int, in_place: bool = False) -> QuantWeight:
    """`w` in the packed layout (formats/packed.py): a new tensor, or w's own bytes rewritten when in_place (then
    nothing may still read them as GGUF blocks)."""
    if not can_pack(w):
        raise KernelInputError(f"{w.qtype.name} {list(w.shape)} cannot be packed (packed: {w.packed})")
    rows, cols, nbytes = weight_size(w, f"{w.qtype.name} weight {list(w.shape)}")
    src = _ptr(w.raw, nbytes) or data_ptr(w.raw, nbytes, f"{w.qtype.name} weight {list(w.shape)}")
    dst = w.raw if in_place else byte_tensor(nbytes).view(w.raw.shape)
    NativeClock.timed(_native.pack_rows8, int(w.qtype), src, dst.data_ptr(), rows, cols, n_threads)
    return QuantWeight(dst, w.qtype, w.shape, packed=True)


def default_threads() -> int:
    """Physical cores this process may run on: distinct (package, core) pairs of the CPUs in its affinity mask,
    from sysfs topology (one thread per core is what these memory-bound kernels want: a hyper-thread sibling
    shares the core's load ports). Where the topology cannot be read, the logical CPU count."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    try:
        cores = {_core_of(cpu) for cpu in cpus}
    except (OSError, ValueError):
        return max(1, len(cpus))
    return max(1, len(cores))


def _core_of(cpu: int) -> tuple[int, int]:
    base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
    with open(base + "physical_package_id") as pkg, open(base + "core_id") as core:
        return int(pkg.read()), int(core.read())


def _ptr(raw, nbytes: int) -> int:
    """Address of `raw` if it is contiguous uint8 in CPU memory, exactly `nbytes` long; else 0 (the fast path:
    this runs for every expert matrix of every layer)."""
    if isinstance(raw, torch.Tensor):
        ok = raw.dtype == torch.uint8 and raw.is_cpu and raw.is_contiguous() and raw.nbytes == nbytes
        return raw.data_ptr() if ok else 0
    if isinstance(raw, np.ndarray):
        ok = raw.dtype == np.uint8 and raw.flags.c_contiguous and raw.nbytes == nbytes
        return raw.ctypes.data if ok else 0
    return 0


def data_ptr(raw: torch.Tensor | np.ndarray, nbytes: int | None = None, what: str = "weight") -> int:
    """Address of a weight's bytes: contiguous uint8 in CPU memory, exactly `nbytes` long when given."""
    size = getattr(raw, "nbytes", 0)
    ptr = _ptr(raw, size if nbytes is None else nbytes)
    if ptr:
        return ptr
    if not isinstance(raw, (torch.Tensor, np.ndarray)):
        raise KernelInputError(f"{what}: raw bytes must be a torch tensor or numpy array, not {type(raw).__name__}")
    if nbytes is not None and size != nbytes:
        raise KernelInputError(f"{what}: {size} raw bytes, but its shape and type take {nbytes}")
    strides = raw.strides if isinstance(raw, np.ndarray) else raw.stride()
    raise KernelInputError(f"{what}: raw bytes must be contiguous uint8 in CPU memory, got {raw.dtype}, "
                           f"shape {tuple(raw.shape)}, strides {strides}")


def weight_size(w: QuantWeight, what: str) -> tuple[int, int, int]:
    """(rows, cols, bytes) of a 2-D weight the native kernels implement, checked; raises KernelInputError."""
    if native_type(w) not in kernel_table():
        raise KernelInputError(f"{what}: no native kernel for {w.qtype.name}{' (packed)' if w.packed else ''}")
    if len(w.shape) != 2 or not 0 < w.shape[0] <= INT_MAX or not 0 < w.shape[1] <= INT_MAX:
        raise KernelInputError(f"{what}: shape {w.shape} must be [rows, cols], each between 1 and {INT_MAX}")
    rows, cols = w.shape
    block, type_size = GGML_QUANT_SIZES[w.qtype]
    if cols % block:
        raise KernelInputError(f"{what}: {cols} columns is not a multiple of {w.qtype.name}'s block of {block}")
    if w.packed and rows % packed_layout.ROWS:
        raise KernelInputError(f"{what}: a packed weight needs rows in multiples of {packed_layout.ROWS}")
    return rows, cols, rows * (cols // block) * type_size


def _activations(x: torch.Tensor, cols: int, what: str) -> torch.Tensor:
    # x: [T, cols] floating point on the CPU -> contiguous float32
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point() or not x.is_cpu:
        raise KernelInputError(f"{what}: x must be a 2-D floating point CPU tensor, got "
                               f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] != cols or x.shape[0] > INT_MAX:
        raise KernelInputError(f"{what}: x is {list(x.shape)}, the weight takes rows of {cols} columns")
    return x.to(torch.float32).contiguous()


def _check_out(out: torch.Tensor, shape: tuple[int, int]) -> None:
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or not out.is_contiguous() \
            or not out.is_cpu or out.shape != shape:
        raise KernelInputError(f"out must be a contiguous float32 CPU tensor of shape {list(shape)}, got "
                               f"{getattr(out, 'dtype', type(out).__name__)} {list(getattr(out, 'shape', ()))}")


def matmul(x: torch.Tensor, w: QuantWeight, n_threads: int, out: torch.Tensor | None = None) -> torch.Tensor:
    # x: [T, K] float32 -> [T, N]; `out` (contiguous float32 [T, N]) is written in full if given
    n_rows, n_cols, nbytes = weight_size(w, "weight")
    ptr = _ptr(w.raw, nbytes) or data_ptr(w.raw, nbytes, f"{w.qtype.name} weight {list(w.shape)}")
    x = _activations(x, n_cols, "matmul")
    y = torch.empty(x.shape[0], n_rows, dtype=torch.float32) if out is None else out
    _check_out(y, (x.shape[0], n_rows))
    NativeClock.timed(_native.matmul, native_type(w), ptr, n_rows, n_cols, x.data_ptr(), x.shape[0], y.data_ptr(),
                      n_threads)
    return y


def matmul_heads(x: torch.Tensor, w: QuantWeight, n_heads: int, n_threads: int) -> torch.Tensor:
    """x: [T, H, K] float32; w: H matrices [N, K] as one 2-D weight [H * N, K] -> y [T, H, N], y[t, h] = W_h x[t, h]."""
    rows, n_cols, nbytes = weight_size(w, "weight")
    if not (isinstance(n_heads, int) and 0 < n_heads <= INT_MAX and rows % n_heads == 0):
        raise KernelInputError(f"matmul_heads: {rows} weight rows do not split into {n_heads} heads")
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[1] == n_heads and x.shape[2] == n_cols):
        raise KernelInputError(f"matmul_heads: x must be [T, {n_heads}, {n_cols}], got {list(getattr(x, 'shape', ()))}")
    ptr = _ptr(w.raw, nbytes) or data_ptr(w.raw, nbytes, f"{w.qtype.name} weight {list(w.shape)}")
    x = x.to(torch.float32).contiguous()
    y = torch.empty(x.shape[0], n_heads, rows // n_heads, dtype=torch.float32)
    try:
        NativeClock.timed(_native.matmul_heads, native_type(w), ptr, n_heads, rows // n_heads, n_cols, x.data_ptr(),
                          x.shape[0], y.data_ptr(), n_threads)
    except (ValueError, OverflowError) as exc:
        raise KernelInputError(f"matmul_heads refused {w.qtype.name} {list(w.shape)} in {n_heads} heads: {exc}") from None
    return y


def _expert_pointers(experts: list[ExpertWeights]) -> tuple[int, int, torch.Tensor]:
    """(d_ff, d_model, int64 pointers [3 * n]: every gate, then every up, then every down). Every expert must match
    the first in types and shapes, since one native call runs them all with one set of sizes."""
    if not experts:
        raise KernelInputError("moe_ffn needs at least one expert")
    first = experts[0]
    sizes = [weight_size(m, f"expert 0 {part}")[2] for part, m in zip(PARTS, first)]
    d_ff, d_model = first.gate.shape
    if first.up.shape != (d_ff, d_model) or first.down.shape != (d_model, d_ff):
        raise KernelInputError(f"expert 0 is {_describe(first)}: gate and up must be [F, D], down [D, F]")
    table = kernel_table()
    if table[int(first.gate.qtype)][1] != table[int(first.up.qtype)][1]:
        raise KernelInputError(f"gate ({first.gate.qtype.name}) and up ({first.up.qtype.name}) need the same "
                               f"activation format")
    ptrs = []
    for j, (ref, size) in enumerate(zip(first, sizes)):
        for i, e in enumerate(experts):
            m = e[j]
            same = m.qtype == ref.qtype and m.shape == ref.shape and m.packed == ref.packed
            ptrs.append(same and _ptr(m.raw, size) or _bad_expert(experts, i, j, size))
    return d_ff, d_model, torch.tensor(ptrs, dtype=torch.int64)


def _bad_expert(experts: list[ExpertWeights], i: int, j: int, size: int) -> int:
    e, first = experts[i], experts[0]
    if tuple((m.qtype, m.shape, m.packed) for m in e) != tuple((m.qtype, m.shape, m.packed) for m in first):
        raise KernelInputError(f"expert {i} is {_describe(e)}, expert 0 {_describe(first)}: one moe_ffn call takes "
                               f"one set of types and shapes")
    return data_ptr(e[j].raw, size, f"expert {i} {PARTS[j]} ({e[j].qtype.name} {list(e[j].shape)})")  # raises


def _describe(e: ExpertWeights) -> str:
    return ", ".join(f"{part} {m.qtype.name} {list(m.shape)}" for part, m in zip(PARTS, e))


def _int32(t: torch.Tensor, what: str) -> torch.Tensor:
    """A 1-D integer tensor as contiguous int32 for C; values that conversion would wrap are refused (the engine
    passes int32 already, so this costs nothing there)."""
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point() or t.is_complex() \
            or t.dtype == torch.bool:
        raise KernelInputError(f"{what} must be a 1-D integer tensor, got {getattr(t, 'dtype', type(t).__name__)} "
                               f"of shape {list(getattr(t, 'shape', ()))}")
    if t.dtype != torch.int32 and len(t):
        lo, hi = (int(v) for v in torch.aminmax(t))
        if lo < -INT_MAX - 1 or hi > INT_MAX:
            raise KernelInputError(f"{what} must fit in int32, got values {lo}..{hi}")
    return t.to(torch.int32).contiguous()


def _routing(offsets: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, n_experts: int):
    """What C cannot check itself: integer offsets [n_experts + 1] ending at len(rows), integer rows, one float
    weight per row; as int32, int32, float32. The values in between are C's to check (see _explain_routing)."""
    offsets, rows = _int32(offsets, "offsets"), _int32(rows, "rows")
    if len(offsets) != n_experts + 1 or int(offsets[-1]) != len(rows):
        raise KernelInputError(f"offsets must have {n_experts + 1} entries ending at len(rows) = {len(rows)}, got "
                               f"{offsets.tolist()}")
    if not isinstance(weights, torch.Tensor) or weights.shape != rows.shape or not weights.is_floating_point():
        raise KernelInputError(f"weights must be floating point with one entry per row ({len(rows)}), got "
                               f"{getattr(weights, 'dtype', type(weights).__name__)} {list(getattr(weights, 'shape', ()))}")
    return offsets, rows, weights.to(torch.float32).contiguous()


def _explain_routing(offsets: torch.Tensor, rows: torch.Tensor, n_tokens: int) -> None:
    """C refused an offset or row value: raise KernelInputError naming it (returns if none looks wrong)."""
    bounds = offsets.tolist()
    if bounds[0] != 0 or any(b < a or b - a > n_tokens for a, b in zip(bounds, bounds[1:])):
        raise KernelInputError(f"offsets must rise from 0 and give no expert more than the {n_tokens} rows of x, "
                               f"got {bounds}")
    lo, hi = (int(v) for v in torch.aminmax(rows)) if len(rows) else (0, 0)
    if lo < 0 or hi >= n_tokens:
        raise KernelInputError(f"rows must index x's {n_tokens} rows, got values {lo}..{hi}")


def moe_ffn(x: torch.Tensor, experts: list[ExpertWeights], offsets: torch.Tensor, rows: torch.Tensor,
            weights: torch.Tensor, n_threads: int) -> torch.Tensor:
    """One native call for a layer's selected experts; rows[offsets[i]:offsets[i+1]] go to experts[i]."""
    d_ff, d_model, ptrs = _expert_pointers(experts)
    x = _activations(x, d_model, "moe_ffn")
    offsets, rows, weights = _routing(offsets, rows, weights, len(experts))
    out = torch.zeros_like(x)
    g, u, d = (native_type(m) for m in experts[0])
    n, base = len(experts), ptrs.data_ptr()  # gate, up and down pointer arrays lie one after another in `ptrs`
    try:
        NativeClock.timed(_native.moe_ffn, x.data_ptr(), x.shape[0], d_model, d_ff, g, u, d, n, base, base + 8 * n,
                          base + 16 * n, offsets.data_ptr(), rows.data_ptr(), weights.data_ptr(), out.data_ptr(),
                          n_threads)
    except ValueError:
        _explain_routing(offsets, rows, x.shape[0])
        raise
    return out


def pool_stress(n_jobs: int, max_tasks: int, n_threads: int, seed: int = 1) -> int:
    """Test hook: run n_jobs tiny thread-pool jobs; returns lost + repeated + out-of-range tasks (0 when right)."""
    return _native.pool_stress(n_jobs, max_tasks, n_threads, seed)
