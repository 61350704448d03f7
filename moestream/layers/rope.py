"""Rotary position embedding. Two layouts, as in GGUF files:
- "norm": rotates adjacent pairs (x[2i], x[2i+1]); used by `llama` (the converter permutes Q/K rows for it).
- "neox": rotates halves (x[i], x[i + d/2]); used by Qwen2/3-MoE, OLMoE.

Context scaling (rope.scaling.*, the file's): "linear" divides every frequency by the factor; "yarn" (Peng et al.
2023; DeepSeek-V3, Kimi-K2, gpt-oss) interpolates the low frequencies, keeps the high ones, ramps between them by
the beta_fast/beta_slow rotation counts over the original context, and may scale cos/sin (`scale`). The formulas
are transformers' (modeling_rope_utils), in the same float32 operations."""

from __future__ import annotations

import math

import torch

ROPE_TYPES = ("norm", "neox")


class Rope:
    def __init__(self, rot_dim: int, base: float, kind: str, scaling=None, truncate: bool = True):
        """scaling: a models/args.py RopeScaling (None: none); truncate: YaRN rounds its ramp's ends to whole
        dims (transformers' default; gpt-oss's reference does not)."""
        assert kind in ROPE_TYPES, kind
        self.rot_dim = rot_dim
        self.kind = kind
        # inv_freq: [rot_dim/2], same formula as HF so that the angles agree bit-for-bit
        self.inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))
        self.scale = 1.0  # cos and sin are multiplied by this (YaRN's attention factor)
        if scaling is not None and scaling.kind == "linear":
            self.inv_freq = self.inv_freq / scaling.factor
        elif scaling is not None and scaling.kind == "yarn":
            self.inv_freq, self.scale = _yarn(rot_dim, base, scaling, truncate)

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
            cos, sin = angles.cos(), angles.sin()
            if self.scale != 1.0:
                cos, sin = cos * self.scale, sin * self.scale
            self._cos_sin = cos[:, None, :], sin[:, None, :]
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


def yarn_mscale(factor: float, multiplier: float = 1.0) -> float:
    """YaRN's magnitude correction for a context `factor` (1 when not extending)."""
    return 1.0 if factor <= 1 else 0.1 * multiplier * math.log(factor) + 1.0


def _yarn(dim: int, base: float, s, truncate: bool = True) -> tuple[torch.Tensor, float]:
    """(inv_freq [dim/2], cos/sin scale). A file that states its attention factor gets it; DeepSeek's (which
    states a log multiplier instead) has mscale = mscale_all_dim, so cos/sin stay as they are and the attention
    scores carry the correction (models/deepseek2.py); others get the paper's 0.1 ln(factor) + 1."""
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolated, interpolated = 1.0 / pos_freqs, 1.0 / (s.factor * pos_freqs)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(s.original_context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1: extrapolate (high frequencies), 0: interpolate
    inv_freq = interpolated * (1 - keep) + extrapolated * keep
    if s.attn_factor is not None:
        return inv_freq, s.attn_factor
    return inv_freq, 1.0 if s.log_multiplier else yarn_mscale(s.factor)
