"""The attention residual step, x + attention(attn_norm(x)), as one native call per layer (kernels/cpu/attention.py).

Used when every segment of the step is short (<= 16 rows: decode, speculative or small chunks), every segment's
cache exposes its buffers (`DirectKV`), every projection has a native kernel, and native steps are on
(MOESTREAM_NO_NATIVE_STEP unset); otherwise the PyTorch path of layers/attention.py runs, and it is the reference the
tests hold this step to. Why: on an 8-layer Mixtral-shaped Q4_0 model this step takes 0.8-1.6 ms per layer and token
of PyTorch small ops and Python off the decode step (docs/benchmarks.md), for 12-17 us of Python of its own. The
caches grow in Python (`reserve`) before the call; the call writes the new keys and values, and `commit` records
them after it returned."""

from __future__ import annotations

from typing import Protocol

import torch

from ..errors import KernelInputError
from ..kernels import cpu
from ..kernels.cpu import attention as native
from ..kernels.dispatch import Compute
from .attention import Attention, Segment
from .norm import RMSNorm


class DirectKV(Protocol):
    def reserve(self, layer: int, t: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Room for t more tokens: k, v buffers [KVH, capacity, Dh] float32 and the n tokens stored."""

    def commit(self, layer: int, t: int) -> None:
        """Rows n..n+t-1 of the buffers were written."""


class NativeAttentionStep:
    def __init__(self, layer: int, kernel: native.AttnLayer, threads: int):
        self.layer, self.kernel, self.threads = layer, kernel, threads

    @classmethod
    def build(cls, norm: RMSNorm, attn: Attention, compute: Compute) -> "NativeAttentionStep | None":
        """The native step for this layer, or None where a projection has no native kernel (or no extension) or
        the kernel refuses the layer's tensors (e.g. a file storing a norm as [1, D], which PyTorch broadcasts)."""
        if (type(attn) is not Attention or compute.device != "cpu" or not cpu.available() or attn.w.o.bias is not None
                or attn.rope.scale != 1.0):  # the kernel computes plain cos/sin from the given frequencies
            return None
        spec = _spec(norm, attn)
        if not native.supports(spec):
            return None
        try:
            return cls(attn.layer, native.AttnLayer(spec), compute.threads)
        except KernelInputError:
            return None  # the PyTorch path decides what such a layer gives

    def accepts(self, segments: list[Segment]) -> bool:
        return bool(segments) and cpu.native_steps_enabled() and all(
            s.length <= native.MAX_SEGMENT_TOKENS and hasattr(s.kv, "commit") for s in segments)

    def __call__(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        # x: [T, D] -> x + attention(attn_norm(x)), [T, D]
        parts = [(*s.kv.reserve(self.layer, s.length), s.start, s.length, s.positions) for s in segments]
        out = native.attn_step(self.kernel, x, parts, self.threads)
        for s in segments:
            s.kv.commit(self.layer, s.length)
        return out


def _spec(norm: RMSNorm, attn: Attention) -> native.AttnSpec:
    w, rope = attn.w, attn.rope
    qk = None if w.q_norm is None else ("head" if w.qk_norm_per_head else "full")
    return native.AttnSpec(
        norm=norm.weight, eps=norm.eps, q=w.q.weight, k=w.k.weight, v=w.v.weight, o=w.o.weight,
        n_heads=attn.n_heads, n_kv_heads=attn.n_kv_heads, head_dim=attn.head_dim, inv_freq=rope.inv_freq,
        neox=rope.kind == "neox", biases=(w.q.bias, w.k.bias, w.v.bias), qk_norm=qk,
        q_norm=None if qk is None else w.q_norm.weight, k_norm=None if qk is None else w.k_norm.weight,
        q_eps=0.0 if qk is None else w.q_norm.eps, k_eps=0.0 if qk is None else w.k_norm.eps,
    )
