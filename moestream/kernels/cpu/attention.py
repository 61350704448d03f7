"""Wrapper of the native attention step (csrc/attention.c): out = x + attention(rms_norm(x)) for one layer and every
segment of a decode step in one call, writing each segment's new keys and values into its cache.

Rules, and why: a layer's fixed arguments (weights, norms, RoPE frequencies, shapes) are checked once, when the
model is built, and kept in a C capsule (`AttnLayer`) that holds them alive, so a call checks only what changes per
step: x, out, and per segment its cache buffers ([KVH, capacity, Dh] float32, contiguous) and positions (int64, one
per row). C checks the values it loops over (segments covering x's rows in order, 1..16 rows each, room in the
cache, positions >= 0) and refuses the call before touching a buffer; this module then names the bad segment.
Measured: 12-17 us of Python per layer and step (reserve, checks, commit), against 0.8-1.6 ms per layer of PyTorch
small ops and Python it replaces on an 8-layer Mixtral-shaped Q4_0 model (2-core VM; docs/benchmarks.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import KernelInputError
from ...formats.weight import QuantWeight
from . import (INT_MAX, NativeClock, _activations, _check_out, _native, _ptr, data_ptr, kernel_table, native_type,
               weight_size)

MAX_SEGMENT_TOKENS = 16  # ATTN_MAX_SEGMENT_TOKENS in attention.h
QK_NORMS = {None: 0, "head": 1, "full": 2}
F32 = torch.float32


@dataclass(frozen=True)
class AttnSpec:
    """One layer's fixed arguments: weights in their GGUF types ([out, in]), float32 vectors."""

    norm: torch.Tensor  # attn_norm weight [D]
    eps: float
    q: QuantWeight  # [H*Dh, D]
    k: QuantWeight  # [KVH*Dh, D]
    v: QuantWeight  # [KVH*Dh, D]
    o: QuantWeight  # [D, H*Dh]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    inv_freq: torch.Tensor  # [rope_dim / 2]
    neox: bool  # RoPE rotates halves (True) or adjacent pairs (False)
    biases: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] = (None, None, None)
    qk_norm: str | None = None  # None, "head" (weights [Dh]) or "full" (weights [H*Dh] and [KVH*Dh])
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None
    q_eps: float = 0.0
    k_eps: float = 0.0


def supports(spec: AttnSpec) -> bool:
    """Every projection has a native kernel (else the layer keeps the PyTorch path)."""
    table = kernel_table()
    return _native is not None and all(native_type(w) in table for w in (spec.q, spec.k, spec.v, spec.o))


class AttnLayer:
    """A layer's checked fixed arguments, as the C capsule attn_step takes; keeps every buffer it points to."""

    def __init__(self, spec: AttnSpec):
        if spec.qk_norm not in QK_NORMS:
            raise KernelInputError(f"qk_norm must be None, 'head' or 'full', got {spec.qk_norm!r}")
        self.spec, self.d_model = spec, spec.q.shape[1] if len(spec.q.shape) == 2 else 0
        self.n_kv_heads, self.head_dim = spec.n_kv_heads, spec.head_dim
        nq, nkv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        self._kept: list[torch.Tensor] = []  # float32 copies of vectors that arrived in another dtype or layout
        norm_sizes = {None: (0, 0), "head": (spec.head_dim, spec.head_dim), "full": (nq, nkv)}[spec.qk_norm]
        vectors = (self._vector(spec.norm, self.d_model, "attn_norm"),
                   self._vector(spec.q_norm, norm_sizes[0], "q_norm"),
                   self._vector(spec.k_norm, norm_sizes[1], "k_norm"), self._vector(spec.inv_freq, None, "inv_freq"))
        rope_dim = 2 * spec.inv_freq.numel()
        projs = tuple(self._proj(w, b, shape, name) for w, b, shape, name in zip(
            (spec.q, spec.k, spec.v, spec.o), (*spec.biases, None),
            ((nq, self.d_model), (nkv, self.d_model), (nkv, self.d_model), (self.d_model, nq)), "qkvo"))
        try:
            self.capsule = _native.attn_layer(self.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim, rope_dim,
                                              int(spec.neox), QK_NORMS[spec.qk_norm], spec.eps, spec.q_eps,
                                              spec.k_eps, *vectors, *projs)
        except (ValueError, OverflowError) as exc:
            raise KernelInputError(f"attention layer refused ({exc}): {spec.n_heads} heads, {spec.n_kv_heads} KV "
                                   f"heads of {spec.head_dim}, RoPE over {rope_dim} features") from None

    def _vector(self, t: torch.Tensor | None, n: int | None, what: str, optional: bool = False) -> int:
        """Address of a float32 [n] vector (0 for None, if optional or n is 0); other dtypes/layouts are copied
        and kept."""
        if t is None:
            if n and not optional:
                raise KernelInputError(f"{what}: a weight of {n} features is needed")
            return 0
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or not t.is_cpu or (n is not None and t.numel() != n):
            raise KernelInputError(f"{what} must be a 1-D CPU tensor of {n} features, got "
                                   f"{list(getattr(t, 'shape', ()))}")
        if t.dtype != F32 or not t.is_contiguous():
            t = t.to(F32).contiguous()
        self._kept.append(t)
        return t.data_ptr()

    def _proj(self, w: QuantWeight, bias: torch.Tensor | None, shape: tuple[int, int], name: str) -> tuple:
        what = f"attn_{name} ({w.qtype.name} {list(w.shape)})"
        rows, cols, nbytes = weight_size(w, what)
        if (rows, cols) != shape:
            raise KernelInputError(f"{what}: expected [{shape[0]}, {shape[1]}] for these head counts and width")
        ptr = _ptr(w.raw, nbytes) or data_ptr(w.raw, nbytes, what)
        return native_type(w), ptr, rows, cols, self._vector(bias, rows, f"attn_{name} bias", optional=True)

    def segment(self, k: torch.Tensor, v: torch.Tensor, n_cached: int, start: int, length: int,
                positions: torch.Tensor) -> tuple:
        """One segment as C takes it: (k, v, capacity, n_cached, start, length, positions)."""
        shape = k.shape
        if not (len(shape) == 3 and shape[0] == self.n_kv_heads and shape[2] == self.head_dim and v.shape == shape
                and k.dtype is F32 and v.dtype is F32 and shape[1] <= INT_MAX
                and k.is_contiguous() and v.is_contiguous() and k.is_cpu and v.is_cpu):
            raise KernelInputError(f"KV cache buffers must be contiguous float32 CPU tensors of shape "
                                   f"[{self.n_kv_heads}, capacity, {self.head_dim}], got {k.dtype} "
                                   f"{list(shape)} and {v.dtype} {list(v.shape)}")
        if not (isinstance(positions, torch.Tensor) and positions.dtype is torch.int64 and positions.is_cpu
                and positions.is_contiguous() and positions.numel() == length):
            raise KernelInputError(f"positions must be a contiguous int64 CPU tensor of the segment's {length} rows, "
                                   f"got {getattr(positions, 'dtype', type(positions).__name__)} "
                                   f"{list(getattr(positions, 'shape', ()))}")
        return k.data_ptr(), v.data_ptr(), shape[1], n_cached, start, length, positions.data_ptr()


def attn_step(layer: AttnLayer, x: torch.Tensor, segments: list[tuple], n_threads: int,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """x: [T, D] -> x + attention ([T, D]); segments: (k, v, n_cached, start, length, positions) per sequence,
    whose rows n_cached..n_cached+length-1 of k and v this call writes. `out` (contiguous float32 [T, D], may be
    x itself) is written in full if given."""
    if not (x.dtype is F32 and x.is_contiguous() and x.is_cpu and x.dim() == 2 and x.shape[1] == layer.d_model):
        x = _activations(x, layer.d_model, "attn_step")  # checks, converts, or says what is wrong
    packed = [layer.segment(*s) for s in segments]
    if out is None:
        y = torch.empty_like(x)
    else:
        y = out
        _check_out(y, (x.shape[0], layer.d_model))
    try:
        NativeClock.timed(_native.attn_step, layer.capsule, x.data_ptr(), x.shape[0], packed, y.data_ptr(),
                          n_threads)
    except (ValueError, OverflowError) as exc:
        raise KernelInputError(f"{exc}; got {x.shape[0]} rows and segments (capacity, cached, start, length, "
                               f"first/last position): {[_describe(s) for s in segments]}") from None
    return y


def _describe(s: tuple) -> tuple:
    k, _, n_cached, start, length, positions = s
    first_last = (int(positions[0]), int(positions[-1])) if positions.numel() else ()
    return (k.shape[1] if k.dim() == 3 else None), n_cached, start, length, first_last
