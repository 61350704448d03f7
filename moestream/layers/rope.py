"""Rotary position embedding. Two layouts, as in GGUF files:
- "norm": rotates adjacent pairs (x[2i], x[2i+1]); used by `llama` (the converter permutes Q/K rows for it).
- "neox": rotates halves (x[i], x[i + d/2]); used by Qwen2/3-MoE, OLMoE."""

from __future__ import annotations

import torch

ROPE_TYPES = ("norm", "neox")


class Rope:
    def __init__(self, rot_dim: int, base: float, kind: str):
        assert kind in ROPE_TYPES, kind
        self.rot_dim = rot_dim
        self.kind = kind
        # inv_freq: [rot_dim/2], same formula as HF so that the angles agree bit-for-bit
        self.inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))

        self._for: torch.Tensor | None = None  # positions the cached cos/sin belong to
        self._cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # x: [T, H, Dh]; positions: [T] int64. Only the first rot_dim features rotate.
        cos, sin = self._angles(positions)
        rot, rest = x[..., : self.rot_dim], x[..., self.rot_dim :]
        rotated = self._rotate(rot, cos, sin)
        return torch.cat([rotated, rest], dim=-1) if rest.numel() else rotated

    def _angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Every layer (and Q and K) of one forward passes the same positions tensor: compute cos/sin once.
        if positions is not self._for:
            angles = positions.float()[:, None] * self.inv_freq[None, :]  # [T, rot/2]
            self._cos_sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
            self._for = positions
        return self._cos_sin

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.kind == "neox":
            half = x.shape[-1] // 2
            x1, x2 = x[..., :half], x[..., half:]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return out.flatten(-2)
