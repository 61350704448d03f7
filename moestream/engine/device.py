"""--device and --vram-budget, checked before anything loads: a one-line error, never a CUDA traceback.

The GPU tier (issue 20) has its kernels (kernels/triton/) and its placement rule and VRAM bookkeeping
(cache/placement.py), tested without a GPU; the engine does not run on a GPU yet, so `cuda` is refused with
that reason where a card exists, and `auto` is the CPU."""

from __future__ import annotations

from ..errors import ConfigError
from ..telemetry.units import human_bytes

DEVICES = ("auto", "cpu", "cuda")


def cuda_card() -> int | None:
    """Bytes of memory on CUDA device 0, or None without one (a CPU build of torch, or no driver)."""
    import torch

    try:
        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    except (RuntimeError, AssertionError):
        return None


def resolve_device(requested: str, vram_budget: int | None, card: int | None | bool = False) -> str:
    """-> the device the engine runs on; card: CUDA memory in bytes, None for no GPU (default: look)."""
    if requested not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if card is False:
        card = cuda_card() if requested == "cuda" or vram_budget else None
    if requested == "cuda" and card is None:
        raise ConfigError("--device cuda: there is no CUDA device here (torch.cuda.is_available() is false: a CPU "
                          "build of torch, or no driver); use --device cpu")
    if vram_budget is not None:
        if card is None:
            raise ConfigError("--vram-budget needs a CUDA device, and there is none here")
        if vram_budget > card:
            raise ConfigError(f"--vram-budget {human_bytes(vram_budget)} is more than the card's "
                              f"{human_bytes(card)}")
    if requested == "cuda" or vram_budget is not None:
        raise ConfigError("the GPU tier is not in this build yet (its kernels and placement are tested without a "
                          "GPU, the engine does not run them); use --device cpu")
    return "cpu"
