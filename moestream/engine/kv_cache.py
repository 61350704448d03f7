"""Per-sequence KV cache: one growable buffer pair per layer, head-major [KVH, capacity, Dh] so that attention
reads each head's keys as a contiguous [S, Dh] matrix (a token-major layout made every decode step copy the
whole cache: 12 ms of 224 per token at 512 tokens on an 8-layer Mixtral-shaped model). Native layer steps write
into the buffers themselves between `reserve` (growth, in Python) and `commit`.

Keys and values may have different widths: multi-head latent attention (layers/mla.py) stores one shared "head"
per token, the compressed latent as k [1, S, kv_lora_rank] and the rotated positional key as v [1, S, rope dims].

Linear-attention layers (Gated DeltaNet, layers/gated_deltanet.py) keep no keys: their state after the tokens seen
so far (a convolution window and one matrix per head) is stored per layer with `set_state`, and counts the tokens
like the KV rows do. Such a state cannot be rolled back, so `truncate` refuses to forget tokens it has absorbed."""

from __future__ import annotations

import torch

from ..errors import ConfigError


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_len: int, initial: int = 256,
                 v_dim: int | None = None):
        self.max_len = max_len
        self.n_kv_heads, self.head_dim, self.v_dim = n_kv_heads, head_dim, head_dim if v_dim is None else v_dim
        cap = min(initial, max_len)
        self.k = [torch.empty(n_kv_heads, cap, head_dim) for _ in range(n_layers)]
        self.v = [torch.empty(n_kv_heads, cap, self.v_dim) for _ in range(n_layers)]
        self.lengths = [0] * n_layers
        self.states: dict[int, tuple[torch.Tensor, ...]] = {}  # linear-attention layers: their recurrent state

    @property
    def length(self) -> int:
        """Tokens stored (after a complete forward pass every layer holds the same number)."""
        return self.lengths[-1]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [t, KVH, Dh] -> all keys/values so far, head-major [KVH, n + t, Dh]
        t = k.shape[0]
        k_buf, v_buf, n = self.reserve(layer, t)
        k_buf[:, n : n + t] = k.transpose(0, 1)
        v_buf[:, n : n + t] = v.transpose(0, 1)
        self.commit(layer, t)
        return k_buf[:, : n + t], v_buf[:, : n + t]

    def reserve(self, layer: int, t: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Room for t more tokens: the whole buffers [KVH, capacity, Dh] and the tokens stored, n. A native step
        writes rows n..n+t-1 itself, then calls commit (the growth stays here, in Python)."""
        n = self.lengths[layer]
        if n + t > self.max_len:
            raise ConfigError(f"context length {self.max_len} exceeded ({n + t} tokens); use a shorter prompt")
        self._reserve(layer, n + t)
        return self.k[layer], self.v[layer], n

    def commit(self, layer: int, t: int) -> None:
        """The t rows after the stored ones were written (see reserve)."""
        self.lengths[layer] += t

    def truncate(self, n: int) -> None:
        """Forget every token after the first n (speculative decoding drops the rejected draft's rows)."""
        if self.states and n < self.length:
            raise ConfigError(f"cannot forget tokens {n}..{self.length - 1}: a linear-attention layer's state has "
                              f"absorbed them (speculative decoding is not available for this model)")
        self.lengths = [min(length, n) for length in self.lengths]

    def state(self, layer: int) -> tuple[torch.Tensor, ...] | None:
        """A linear-attention layer's state after the tokens stored (None before the first)."""
        return self.states.get(layer)

    def set_state(self, layer: int, state: tuple[torch.Tensor, ...], t: int) -> None:
        """The layer's state after t more tokens."""
        n = self.lengths[layer]
        if n + t > self.max_len:
            raise ConfigError(f"context length {self.max_len} exceeded ({n + t} tokens); use a shorter prompt")
        self.states[layer] = state
        self.lengths[layer] = n + t

    def _reserve(self, layer: int, needed: int) -> None:
        cap = self.k[layer].shape[1]
        if needed <= cap:
            return
        new_cap = min(self.max_len, max(needed, 2 * cap))
        for bufs, dim in ((self.k, self.head_dim), (self.v, self.v_dim)):
            grown = torch.empty(self.n_kv_heads, new_cap, dim)
            grown[:, :cap] = bufs[layer]
            bufs[layer] = grown
