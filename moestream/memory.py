"""Large buffers in transparent huge pages: the kernels stream weights at ~30 GB/s, and with 4 KiB pages every page
is a TLB miss, which costs most on a VM (two-level page walks). Measured on the 8-layer Mixtral-shaped Q4_0 file:
decode 87.5 -> 78 ms per token with the cache slots in huge pages (docs/benchmarks.md).

Private anonymous mmaps with MADV_HUGEPAGE: Linux's default THP mode ("madvise") gives huge pages only to memory
that asks, and shared anonymous memory (shmem) none unless shmem_enabled says so. Page-aligned, as O_DIRECT needs.
Leaf module: imports nothing of ours."""

from __future__ import annotations

import mmap

import numpy as np

HUGE_PAGE = 2 << 20  # below this a buffer gains nothing from huge pages


def anonymous(size: int) -> mmap.mmap:
    """size (> 0) bytes of private anonymous memory, zero-filled, huge pages asked for where the kernel has them."""
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass  # a kernel without THP: 4 KiB pages, slower but correct
    return buf


def byte_array(size: int) -> np.ndarray:
    """uint8 [size], in huge pages when large (it keeps its mapping alive)."""
    return np.frombuffer(anonymous(size), dtype=np.uint8) if size >= HUGE_PAGE else np.empty(size, dtype=np.uint8)


def byte_tensor(size: int) -> "torch.Tensor":  # noqa: F821
    """uint8 [size] torch tensor, in huge pages when large."""
    import torch  # here, so that formats/ (numpy only) can use this module without torch

    return torch.from_numpy(byte_array(size)) if size >= HUGE_PAGE else torch.empty(size, dtype=torch.uint8)
