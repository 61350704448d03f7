"""Wrapper of the native MoE step (csrc/moe_step.c): out = x + MoE(rms_norm(x)) for one layer, as one `route` call,
then one `experts` call per batch of experts the source hands over as their weights become ready.

Rules, and why: a layer's fixed arguments (norm, router, shared expert) are checked once, when the model is built,
and kept in a C capsule (`MoELayer`) that holds them alive. The buffers live in one `Workspace` per model, grown to
the largest step seen and reused, so a decode step allocates nothing in C; the route (choices, grouping, the scratch
rows written so far) stays in it between the calls, so a workspace serves one layer at a time. Per call Python checks
what C cannot see: x and out (dtype, layout, shape), and per batch each expert's types, shapes and byte sizes (C gets
bare addresses), with the sizes of one set of types computed once. C checks the values it loops over (expert indices
against the route, the route against the layer and the token count) before it touches a buffer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import KernelInputError
from ...formats.weight import ExpertWeights, QuantWeight
from . import (INT_MAX, PARTS, NativeClock, _activations, _check_out, _native, _ptr, data_ptr, kernel_table, native_type,
               weight_size)

F32 = torch.float32
SCORINGS = ("softmax", "sigmoid")  # C's scoring values, in order


@dataclass(frozen=True)
class MoESpec:
    """One MoE layer's fixed arguments: weights in their GGUF types ([out, in]), the norm as float32."""

    norm: torch.Tensor  # ffn_norm weight [D]
    eps: float
    router: QuantWeight  # ffn_gate_inp [E, D]
    k: int
    normalize: bool  # rescale the top-k probabilities to sum to 1
    shared_gate_inp: QuantWeight | None = None  # ffn_gate_inp_shexp [1, D]; None: the shared expert is not gated
    shared: ExpertWeights | None = None  # ffn_{gate,up}_shexp [Fs, D], ffn_down_shexp [D, Fs]
    scoring: str = "softmax"  # or "sigmoid" (layers/grouped_router.py has the rules below)
    selection_bias: torch.Tensor | None = None  # [E], added to the scores to choose experts, not to weigh them
    scale: float = 1.0  # the chosen weights are multiplied by this
    n_groups: int = 1
    groups_used: int = 1


def supports(spec: MoESpec) -> bool:
    """Router and shared expert have native kernels, gate and up one activation format (else the PyTorch path)."""
    table = kernel_table()
    weights = [spec.router] + ([*spec.shared] if spec.shared is not None else [])
    weights += [spec.shared_gate_inp] if spec.shared is not None and spec.shared_gate_inp is not None else []
    if _native is None or any(native_type(w) not in table for w in weights):
        return False
    return spec.shared is None or table[int(spec.shared.gate.qtype)][1] == table[int(spec.shared.up.qtype)][1]


class Workspace:
    """The step's buffers (one per model): they grow to the largest step and are freed with this object."""

    def __init__(self):
        self.capsule = _native.moe_workspace()

    def poison(self) -> None:
        """Tests: NaN into every float buffer, so a value read before it is written shows."""
        _native.moe_workspace_poison(self.capsule)


class MoELayer:
    """A layer's checked fixed arguments, as the C capsule the step takes; keeps every buffer it points to."""

    def __init__(self, spec: MoESpec):
        self.spec, self.k = spec, spec.k
        self.n_experts, self.d_model = (spec.router.shape if len(spec.router.shape) == 2 else (0, 0))
        self._kept: list[torch.Tensor] = []
        self._sizes: dict[tuple, tuple] = {}  # (type, shape) of gate, up, down -> (types, d_ff, byte sizes)
        self._items: dict[int, tuple] = {}  # id(ExpertWeights) -> (it, its checked key and addresses)
        norm = self._vector(spec.norm, self.d_model, "ffn_norm")
        router = self._matrix(spec.router, (self.n_experts, self.d_model), "ffn_gate_inp")
        shared = self._shared(spec)
        bias = 0 if spec.selection_bias is None else self._vector(spec.selection_bias, self.n_experts, "exp_probs_b")
        if spec.scoring not in SCORINGS:
            raise KernelInputError(f"scoring must be one of {', '.join(SCORINGS)}, got {spec.scoring!r}")
        try:
            self.capsule = _native.moe_layer(self.d_model, self.n_experts, spec.k, int(spec.normalize), spec.eps,
                                             norm, *router, SCORINGS.index(spec.scoring), bias, spec.scale,
                                             spec.n_groups, spec.groups_used, *shared)
        except (ValueError, OverflowError) as exc:
            raise KernelInputError(f"MoE layer refused ({exc}): {self.n_experts} experts of width {self.d_model}, "
                                   f"top-{spec.k}, eps {spec.eps}") from None

    def _vector(self, t: torch.Tensor, n: int, what: str) -> int:
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or not t.is_cpu or t.numel() != n:
            raise KernelInputError(f"{what} must be a 1-D CPU tensor of {n} features, got "
                                   f"{list(getattr(t, 'shape', ()))}")
        t = t.to(F32).contiguous()
        self._kept.append(t)
        return t.data_ptr()

    def _matrix(self, w: QuantWeight, shape: tuple[int, int], what: str) -> tuple[int, int]:
        what = f"{what} ({w.qtype.name} {list(w.shape)})"
        rows, cols, nbytes = weight_size(w, what)
        if (rows, cols) != shape:
            raise KernelInputError(f"{what}: expected [{shape[0]}, {shape[1]}]")
        return native_type(w), _ptr(w.raw, nbytes) or data_ptr(w.raw, nbytes, what)

    def _shared(self, spec: MoESpec) -> tuple:
        """(d_ff, gated, then type and address of gate_inp, gate, up, down); all 0 without a shared expert (and
        gate_inp's without a gate)."""
        if spec.shared is None:
            return (0,) * 10
        d, f = self.d_model, spec.shared.gate.shape[0] if len(spec.shared.gate.shape) == 2 else 0
        gated = spec.shared_gate_inp is not None
        gate = self._matrix(spec.shared_gate_inp, (1, d), "ffn_gate_inp_shexp") if gated else (0, 0)
        shapes, names = ((f, d), (f, d), (d, f)), ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")
        return (f, int(gated), *gate, *(v for w, s, n in zip(spec.shared, shapes, names) for v in self._matrix(w, s, n)))

    def batch_items(self, batch: list[tuple[int, ExpertWeights]]) -> tuple[tuple, list[int]]:
        """((gate, up, down types, d_ff), [index, gate, up, down addresses] per expert), every expert checked
        against the first: one call takes one set of types and shapes."""
        first = batch[0][1]
        key = self._item(first)[0]
        items: list[int] = []
        for i, e in batch:
            item = self._item(e)
            if item[0] != key:
                raise KernelInputError(f"expert {i} is {_describe(e)}, the batch's first {_describe(first)}: one "
                                       f"call takes one set of types and shapes")
            items += (i, *item[1:])
        return self._sizes[key][0], items

    def _item(self, e: ExpertWeights) -> tuple:
        """(types-and-shapes key, gate, up, down addresses) of one expert, checked once per ExpertWeights object: a
        cache hands out the same object for as long as the expert stays in its slot (a new one when it is re-read
        or packed), and the memo's reference keeps the object, and so its id and its bytes, alive. Measured: the
        checks were ~8 us per expert, 3 ms per token on a 48-layer top-8 model."""
        memo = self._items.get(id(e))
        if memo is not None and memo[0] is e:
            return memo[1]
        g, u, d = e
        key = ((g.qtype, g.shape, g.packed), (u.qtype, u.shape, u.packed), (d.qtype, d.shape, d.packed))
        sizes = (self._sizes.get(key) or self._sizes_for(e, key))[1]
        item = (key, _ptr(g.raw, sizes[0]) or _bad(e, 0, sizes[0]), _ptr(u.raw, sizes[1]) or _bad(e, 1, sizes[1]),
                _ptr(d.raw, sizes[2]) or _bad(e, 2, sizes[2]))
        if len(self._items) > 2 * self.n_experts + 16:  # a layer has at most n_experts live objects in a cache
            self._items.clear()
        self._items[id(e)] = (e, item)
        return item

    def _sizes_for(self, first: ExpertWeights, key: tuple) -> tuple:
        sizes = tuple(weight_size(m, f"expert {part} ({m.qtype.name})")[2] for part, m in zip(PARTS, first))
        f, d = first.gate.shape
        if d != self.d_model or first.up.shape != (f, d) or first.down.shape != (d, f):
            raise KernelInputError(f"experts are {_describe(first)}: gate and up must be [F, {self.d_model}], "
                                   f"down [{self.d_model}, F]")
        table = kernel_table()
        if table[int(first.gate.qtype)][1] != table[int(first.up.qtype)][1]:
            raise KernelInputError(f"gate ({first.gate.qtype.name}) and up ({first.up.qtype.name}) need the same "
                                   f"activation format")
        self._sizes[key] = tuple(native_type(m) for m in first) + (f,), sizes
        return self._sizes[key]


def _bad(e: ExpertWeights, j: int, size: int) -> int:
    return data_ptr(e[j].raw, size, f"expert {PARTS[j]} ({e[j].qtype.name} {list(e[j].shape)})")  # raises


def _describe(e: ExpertWeights) -> str:
    return ", ".join(f"{part} {m.qtype.name} {list(m.shape)}" for part, m in zip(PARTS, e))


def check_x(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    # x: [T, D] -> contiguous float32 (a copy only if it was not), T >= 1
    if not (x.dtype is F32 and x.is_contiguous() and x.is_cpu and x.dim() == 2 and x.shape[1] == layer.d_model):
        x = _activations(x, layer.d_model, "moe step")  # checks, converts, or says what is wrong
    if not 0 < x.shape[0] <= INT_MAX:
        raise KernelInputError(f"moe step: x has {x.shape[0]} rows; it needs 1 to {INT_MAX}")
    return x


def route(layer: MoELayer, ws: Workspace, x: torch.Tensor, n_threads: int, tap: bool = False):
    """x: [T, D] checked (check_x) -> (distinct experts ascending, ids [T, k] int64, probs [T, k] float32); ids and
    probs (the chosen experts' softmax probabilities, before renormalisation) are None unless `tap`."""
    ids = probs = None
    if tap:
        ids, probs = torch.empty(x.shape[0], layer.k, dtype=torch.int64), torch.empty(x.shape[0], layer.k, dtype=F32)
    try:
        experts = NativeClock.timed(_native.moe_route, layer.capsule, ws.capsule, x.data_ptr(), x.shape[0],
                                    ids.data_ptr() if tap else 0, probs.data_ptr() if tap else 0, n_threads)
    except (ValueError, OverflowError) as exc:
        raise KernelInputError(f"{exc}; got x of {list(x.shape)}") from None
    return experts, ids, probs


def experts(layer: MoELayer, ws: Workspace, x: torch.Tensor, out: torch.Tensor,
            batch: list[tuple[int, ExpertWeights]], n_threads: int) -> bool:
    """One batch of (index into route's experts, weights). True once every routed expert is computed: then
    out = x + the layer's MoE output. x is route's; out: contiguous float32 [T, D], not overlapping x."""
    _check_out(out, tuple(x.shape))
    (g, u, d, d_ff), items = layer.batch_items(batch) if batch else ((0, 0, 0, 1), [])
    try:
        return NativeClock.timed(_native.moe_experts, layer.capsule, ws.capsule, x.data_ptr(), out.data_ptr(),
                                 x.shape[0], g, u, d, d_ff, items, n_threads)
    except (ValueError, OverflowError) as exc:
        indices = [i for i, _ in batch]
        raise KernelInputError(f"{exc}; got x of {list(x.shape)}, experts at indices {indices}") from None


def export_route(layer: MoELayer, ws: Workspace, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The routed layer's normed input xn [T, D] and its pairs' routing weights [T*k] (expert sharding sends the
    rows of other ranks' experts out)."""
    xn = torch.empty(n_tokens, layer.d_model, dtype=F32)
    weights = torch.empty(n_tokens * layer.k, dtype=F32)
    try:
        _native.moe_route_export(layer.capsule, ws.capsule, n_tokens, xn.data_ptr(), weights.data_ptr())
    except (ValueError, OverflowError) as exc:
        raise KernelInputError(f"{exc}; {n_tokens} tokens") from None
    return xn, weights


def import_rows(layer: MoELayer, ws: Workspace, n_tokens: int, groups: list[int], rows: torch.Tensor) -> None:
    """Weighted rows [n, D] of the routed experts at indices `groups`, computed elsewhere: group after group, each
    group's pairs in token order (as layers/experts.py groups them). A later `experts` call completes the step."""
    if not (rows.dtype is F32 and rows.dim() == 2 and rows.shape[1] == layer.d_model and rows.is_cpu):
        raise KernelInputError(f"imported rows must be float32 [n, {layer.d_model}] on the CPU, got "
                               f"{rows.dtype} {list(rows.shape)}")
    rows = rows.contiguous()
    index = torch.tensor(groups, dtype=torch.int32)
    try:
        _native.moe_import_rows(layer.capsule, ws.capsule, n_tokens, index.data_ptr(), len(groups), rows.data_ptr(),
                                rows.shape[0])
    except (ValueError, OverflowError) as exc:
        raise KernelInputError(f"{exc}; {len(groups)} expert groups, {rows.shape[0]} rows") from None
