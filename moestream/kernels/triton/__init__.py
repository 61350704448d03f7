"""Triton kernels for the GPU tier (gguf.py), beside kernels/cpu/ and with the same PyTorch references as their
oracle. `available()`: triton imports (it is an optional dependency: the CPU engine never needs it). On a machine
without a GPU the kernels still run under TRITON_INTERPRET=1, which the tests use."""

from __future__ import annotations

import importlib.util
import os


def available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Kernels run on the CPU through Triton's interpreter (set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
