"""Native CPU kernels (plain C extension built with the package). `available()` is False when the extension
could not be built or loaded; callers then use kernels.reference."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from ...formats.weight import ExpertWeights, QuantWeight

try:
    from . import _native
except ImportError:  # not built (e.g. a source checkout without a compiler)
    _native = None


class NativeClock:
    """Seconds spent inside native calls (so benchmarks can report the Python/torch time around them)."""

    seconds = 0.0
    calls = 0

    @classmethod
    def timed(cls, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        cls.seconds += time.perf_counter() - t0
        cls.calls += 1


def available() -> bool:
    return _native is not None and not os.environ.get("MOESTREAM_NO_NATIVE")


def kernel_table() -> dict[int, tuple[str, int]]:
    return _native.kernel_table() if _native else {}


def supports(qtype) -> bool:
    return available() and int(qtype) in kernel_table()


def default_threads() -> int:
    """Physical cores where we can tell (one thread per core is what these memory-bound kernels want)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def data_ptr(raw: torch.Tensor | np.ndarray) -> int:
    if isinstance(raw, np.ndarray):
        assert raw.flags.c_contiguous, "weight bytes must be contiguous"
        return raw.ctypes.data
    assert raw.is_contiguous(), "weight bytes must be contiguous"
    return raw.data_ptr()


def matmul(x: torch.Tensor, w: QuantWeight, n_threads: int, out: torch.Tensor | None = None) -> torch.Tensor:
    # x: [T, K] float32 -> [T, N]; `out` (contiguous float32 [T, N]) is written in full if given
    x = x.to(torch.float32).contiguous()
    n_rows, n_cols = w.shape
    y = torch.empty(x.shape[0], n_rows, dtype=torch.float32) if out is None else out
    assert y.shape == (x.shape[0], n_rows) and y.is_contiguous() and y.dtype == torch.float32
    NativeClock.timed(_native.matmul, int(w.qtype), data_ptr(w.raw), n_rows, n_cols, x.data_ptr(), x.shape[0],
                      y.data_ptr(), n_threads)
    return y


def moe_ffn(x: torch.Tensor, experts: list[ExpertWeights], offsets: torch.Tensor, rows: torch.Tensor,
            weights: torch.Tensor, n_threads: int) -> torch.Tensor:
    """One native call for a layer's selected experts; rows[offsets[i]:offsets[i+1]] go to experts[i]."""
    x = x.to(torch.float32).contiguous()
    out = torch.zeros_like(x)
    g, u, d = experts[0]
    ptrs = [torch.tensor([data_ptr(getattr(e, part).raw) for e in experts], dtype=torch.int64)
            for part in ("gate", "up", "down")]
    offsets = offsets.to(torch.int32).contiguous()
    rows = rows.to(torch.int32).contiguous()
    weights = weights.to(torch.float32).contiguous()
    NativeClock.timed(_native.moe_ffn, x.data_ptr(), x.shape[0], x.shape[1], g.shape[0], int(g.qtype), int(u.qtype), int(d.qtype),
                    len(experts), *(p.data_ptr() for p in ptrs), offsets.data_ptr(), rows.data_ptr(),
                    weights.data_ptr(), out.data_ptr(), n_threads)
    return out
