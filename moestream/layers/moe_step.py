"""The MoE residual step, x + MoE(ffn_norm(x)), natively (kernels/cpu/moe_step.py): one call routes (norm, router,
softmax, top-k, grouping by expert, the shared expert's gate), then one call per batch of experts as the source makes
their weights ready (the first also runs the shared expert; the last sums and adds the residual).

Used when native steps are on (the extension is built, MOESTREAM_NO_NATIVE_STEP unset, checked per call), the router
and shared expert have native kernels, and the source says the layer's routed experts are all of one set of types
that `Compute` runs natively (F32 experts keep PyTorch's BLAS, as in kernels/dispatch.py). Otherwise the PyTorch path
(MoEBlock and ExpertFFNs) runs, and it is the reference the tests hold this step to: same expert kernel, same sum
order, so the two differ only in the rounding of the norm, the router and the shared expert's SiLU. Why: that path
spends ~20 torch ops and their Python per layer and token around the kernels (grouping, gathers, scatters, the k-way
sum): measured, 0.75 ms per layer and token on an 8-layer Mixtral-shaped file, against ~25 us of Python and 2 native
calls here (docs/benchmarks.md). Results do not depend on the order or grouping of batches (one scratch row per token
and slot, summed in slot order), so a cache miss cannot change the logits. Observers: the MoE block's `on_route`
tap is called as the PyTorch path calls it; the prefetcher's lookahead reads `ffn_norm` and `router.gate_inp`, which
stay in place."""

from __future__ import annotations

import torch

from ..errors import KernelInputError
from ..formats.weight import ExpertWeights
from ..kernels import cpu
from ..kernels.cpu import moe_step as native
from ..kernels.dispatch import Compute
from .experts import ExpertFFNs, by_layout, group_by_expert
from .grouped_router import GroupLimitedRouter
from .moe import MoEBlock, Router, SharedExpert
from .norm import RMSNorm


def new_workspace() -> native.Workspace | None:
    """The buffers every MoE step of one model shares (None without the native extension)."""
    return native.Workspace() if cpu.available() else None


class NativeMoEStep:
    def __init__(self, moe: MoEBlock, source, kernel: native.MoELayer, workspace: native.Workspace, threads: int):
        self.moe, self.source, self.kernel, self.ws, self.threads = moe, source, kernel, workspace, threads
        self.layer = moe.experts.layer
        self.remote = None  # expert sharding (shard/remote.py): other ranks' experts, computed there

    @classmethod
    def build(cls, norm: RMSNorm, moe: MoEBlock, compute: Compute,
              workspace: native.Workspace | None) -> "NativeMoEStep | None":
        """The native step for this layer, or None where some weight has no native kernel (or no extension)."""
        if workspace is None or compute.device != "cpu" or not _plain(moe):
            return None
        source, layer = moe.experts.source, moe.experts.layer
        types = getattr(source, "expert_types", lambda layer: None)(layer)
        shared = moe.shared
        if shared is not None:
            types = types and (*types, shared.ffn.gate.weight.qtype, shared.ffn.up.weight.qtype,
                               shared.ffn.down.weight.qtype)
        if types is None or not _experts_native(types, compute):
            return None
        spec = _spec(norm, moe)
        if spec is None or not native.supports(spec):
            return None
        try:
            kernel = native.MoELayer(spec)
        except KernelInputError:
            return None  # shapes the step does not take (a [1, D] norm, ...): the PyTorch path broadcasts or refuses
        return cls(moe, source, kernel, workspace, compute.threads)

    def enabled(self) -> bool:
        return cpu.native_steps_enabled()

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # x: [T, D] residual stream -> x + MoE(ffn_norm(x)), [T, D]; `out` (float32 [T, D]) is written in full if given
        if x.dim() == 2 and x.shape[0] == 0:
            return x.clone()  # no token: nothing to route
        x = native.check_x(self.kernel, x)
        tap = self.moe.on_route
        experts, ids, probs = native.route(self.kernel, self.ws, x, self.threads,
                                           tap is not None or self.remote is not None)
        if tap is not None:
            tap(self.layer, ids, probs)
        out = torch.empty_like(x) if out is None else out
        if self.remote is not None:
            return self._sharded(x, out, experts, ids)
        done = False
        for batch in self.source.acquire(self.layer, experts):
            for part in by_layout(batch) if batch else ():
                done = native.experts(self.kernel, self.ws, x, out, part, self.threads)
        self._check_done(done, experts)
        return out

    def _sharded(self, x: torch.Tensor, out: torch.Tensor, experts: list[int], ids: torch.Tensor) -> torch.Tensor:
        """Other ranks' experts get the route's xn rows; ours run here meanwhile; theirs come back as rows."""
        xn, weights = native.export_route(self.kernel, self.ws, x.shape[0])
        _, offsets, pairs = group_by_expert(ids)  # the C step's grouping: stable by expert, token order
        local, remote = self.remote.send(self.layer, experts, offsets, pairs, xn, weights, self.kernel.k)
        done = False
        try:
            if local:
                for batch in self.source.acquire(self.layer, [experts[i] for i in local]):
                    for part in by_layout(batch) if batch else ():
                        done = native.experts(self.kernel, self.ws, x, out,
                                              [(local[i], w) for i, w in part], self.threads)
        except BaseException:
            if remote is not None:
                remote.drain()
            raise
        if remote is not None:
            for groups, _, rows in remote.wait():
                native.import_rows(self.kernel, self.ws, x.shape[0], groups, rows)
            done = native.experts(self.kernel, self.ws, x, out, [], self.threads)
        self._check_done(done, experts)
        return out

    def _check_done(self, done: bool, experts: list[int]) -> None:
        if not done:
            raise KernelInputError(f"layer {self.layer}: the expert source did not hand over every routed expert "
                                   f"({len(experts)} asked)")


def _plain(moe: MoEBlock) -> bool:
    """The block is made of the parts this step re-implements (and no bias it would miss)."""
    shared = moe.shared
    plain_shared = shared is None or (type(shared) is SharedExpert
                                      and (shared.gate_inp is None or shared.gate_inp.bias is None) and all(
        lin.bias is None for lin in (shared.ffn.gate, shared.ffn.up, shared.ffn.down)))
    return (type(moe.router) in (Router, GroupLimitedRouter) and moe.router.gate_inp.bias is None
            and type(moe.experts) is ExpertFFNs and plain_shared)


def _experts_native(types: tuple, compute: Compute) -> bool:
    """(gate, up, down) types of the routed (and shared) experts that Compute runs natively, each gate and up with
    one activation format."""
    table = cpu.kernel_table()
    same_act = all(table[int(g)][1] == table[int(u)][1] for g, u in zip(types[0::3], types[1::3]))
    return all(compute.is_native_type(t) for t in types) and same_act


def _spec(norm: RMSNorm, moe: MoEBlock) -> native.MoESpec | None:
    if type(norm) is not RMSNorm:
        return None
    shared, router = moe.shared, moe.router
    grouped = {} if type(router) is Router else dict(
        scoring=router.scoring, selection_bias=router.bias, scale=router.scale, n_groups=router.n_groups,
        groups_used=router.groups_used)
    return native.MoESpec(
        norm=norm.weight, eps=norm.eps, router=router.gate_inp.weight, k=router.k, normalize=router.normalize,
        shared_gate_inp=None if shared is None or shared.gate_inp is None else shared.gate_inp.weight,
        shared=None if shared is None else ExpertWeights(shared.ffn.gate.weight, shared.ffn.up.weight,
                                                         shared.ffn.down.weight),
        **grouped,
    )
