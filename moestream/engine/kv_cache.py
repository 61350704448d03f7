"""Per-sequence KV cache: one growable [capacity, KVH, Dh] buffer pair per layer."""

from __future__ import annotations

import torch

from ..errors import ConfigError


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_len: int, initial: int = 256):
        self.max_len = max_len
        self._shape = (n_kv_heads, head_dim)
        cap = min(initial, max_len)
        self.k = [torch.empty(cap, *self._shape) for _ in range(n_layers)]
        self.v = [torch.empty(cap, *self._shape) for _ in range(n_layers)]
        self.lengths = [0] * n_layers

    @property
    def length(self) -> int:
        """Tokens stored (after a complete forward pass every layer holds the same number)."""
        return self.lengths[-1]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [t, KVH, Dh] -> all keys/values so far, [n + t, KVH, Dh]
        n, t = self.lengths[layer], k.shape[0]
        if n + t > self.max_len:
            raise ConfigError(f"context length {self.max_len} exceeded ({n + t} tokens); use a shorter prompt")
        self._reserve(layer, n + t)
        self.k[layer][n : n + t] = k
        self.v[layer][n : n + t] = v
        self.lengths[layer] = n + t
        return self.k[layer][: n + t], self.v[layer][: n + t]

    def _reserve(self, layer: int, needed: int) -> None:
        cap = self.k[layer].shape[0]
        if needed <= cap:
            return
        new_cap = min(self.max_len, max(needed, 2 * cap))
        for bufs in (self.k, self.v):
            grown = torch.empty(new_cap, *self._shape)
            grown[:cap] = bufs[layer]
            bufs[layer] = grown
