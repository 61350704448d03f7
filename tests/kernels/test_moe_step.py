"""The native MoE step (layers/moe_step.py over csrc/moe_step.c) against the PyTorch path it replaces
(x + MoEBlock(ffn_norm(x)) with ExpertFFNs), on random layers: T = 1, 3, 16 tokens, k = 1..4, up to 64 experts, with
and without Qwen2-MoE's shared expert, renormalised or not, Q8_0 / Q4_0 / Q4_K experts. Outputs and the workspace are
poisoned with NaN first, so an unwritten element fails.

Bounds: both paths run the same expert kernel (expert_rows) and sum in the same order; they differ in the rounding
of the RMSNorm (float sums in another order), the F32 router and softmax (~1e-7 relative), and the shared expert's
SiLU (torch's against expf). A difference of an ulp matters where it moves an activation across an int8 rounding
step: then an output moves by one step times a weight, not by float rounding. So the inputs are multiples of 1/16
(their squares sum exactly in any order: both norms give the same xn, hence the same int8 activations for the
routed experts), and the shared expert's intermediate may round either way twice per row (`shared_flip_allowance`);
beyond that, outputs agree to 1e-5 of the FFN output's scale. Routing (ids) must agree exactly, probabilities to
float rounding. Across batch orders and groupings the step must be bit-identical."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as Q

from moestream.errors import KernelInputError
from moestream.formats.weight import ExpertWeights, QuantWeight
from moestream.kernels.cpu import moe_step as native
from moestream.kernels.dispatch import Compute
from moestream.layers.experts import ExpertFFNs
from moestream.layers.grouped_router import GroupLimitedRouter
from moestream.layers.linear import QuantLinear
from moestream.layers.moe import DenseFFN, MoEBlock, Router, SharedExpert
from moestream.layers.moe_step import NativeMoEStep
from moestream.layers.norm import RMSNorm
from tests.kernels.test_kernels import quantized_weight
from tests.kernels.test_kquant_kernels import _weight as kquant_weight

COMPUTE = Compute(threads=2)
DIMS = {Q.Q8_0: (64, 96, 96), Q.Q4_0: (64, 96, 96), Q.Q4_K: (256, 256, 256)}  # D, F, shared F per type


def matrix(qtype: Q, n: int, k: int, seed: int) -> QuantWeight:
    if qtype == Q.Q4_K:
        return kquant_weight(np.random.default_rng(seed), qtype, n, k)
    return quantized_weight(qtype, n, k, seed)


def activations(t: int, d: int, seed: int = 1) -> torch.Tensor:
    """[t, d] multiples of 1/16 in [-4, 4]: their squares are exact and sum exactly in any order."""
    return torch.randint(-64, 65, (t, d), generator=torch.Generator().manual_seed(seed)).float() / 16


def f32(t: torch.Tensor) -> QuantWeight:
    return QuantWeight(t.contiguous().view(torch.uint8).reshape(t.shape[0], -1), Q.F32, tuple(t.shape))


class Source:
    """An ExpertSource over experts in RAM whose batches come in the order `order` picks (what a cache does)."""

    def __init__(self, experts: list[ExpertWeights], order: str = "all", seed: int = 0):
        self.experts, self.order, self.rng = experts, order, random.Random(seed)
        self.skip_last = False  # a broken source: one expert never comes

    def expert_types(self, layer: int) -> tuple:
        return tuple(m.qtype for m in self.experts[0])

    def acquire(self, layer: int, experts: list[int]):
        idx = list(range(len(experts) - self.skip_last))
        if self.order == "reversed":
            idx.reverse()
        elif self.order == "random":
            self.rng.shuffle(idx)
        size = len(idx) if self.order == "all" else 1 if self.order == "reversed" else self.rng.randint(1, 3)
        for s in range(0, len(idx), size):
            yield [(i, self.experts[experts[i]]) for i in idx[s:s + size]]


def layer(qtype: Q, n_experts: int, k: int, normalize: bool, shared: bool, seed: int = 0, order: str = "all",
          grouped: dict | None = None, shared_gated: bool = True):
    """(ffn_norm, MoEBlock) of random weights; the block's experts come from a Source. grouped: GroupLimitedRouter
    arguments (scoring, bias, scale, n_groups, groups_used) instead of the softmax Router."""
    d, f, fs = DIMS[qtype]
    g = torch.Generator().manual_seed(seed)
    experts = [ExpertWeights(matrix(qtype, f, d, seed + 3 * e), matrix(qtype, f, d, seed + 3 * e + 1),
                             matrix(qtype, d, f, seed + 3 * e + 2)) for e in range(n_experts)]
    gate_inp = QuantLinear(f32(torch.randn(n_experts, d, generator=g) * 0.3), compute=COMPUTE)
    if grouped is None:
        router = Router(gate_inp, k, normalize)
    else:
        bias = 0.1 * torch.randn(n_experts, generator=g) if grouped.pop("bias") else None
        router = GroupLimitedRouter(gate_inp, k, bias=bias, normalize=normalize, **grouped)
    sh = None
    if shared:
        ffn = DenseFFN(*(QuantLinear(matrix(qtype, *shape, seed + 1000 + j), compute=COMPUTE)
                         for j, shape in enumerate([(fs, d), (fs, d), (d, fs)])))
        gate = QuantLinear(f32(torch.randn(1, d, generator=g) * 0.3), compute=COMPUTE) if shared_gated else None
        sh = SharedExpert(ffn, gate)
    norm = RMSNorm(torch.rand(d, generator=g) + 0.5, 1e-5)
    return norm, MoEBlock(router, ExpertFFNs(3, Source(experts, order, seed), COMPUTE), sh, layer=3)


def native_step(norm: RMSNorm, moe: MoEBlock, ws: native.Workspace | None = None) -> NativeMoEStep:
    step = NativeMoEStep.build(norm, moe, COMPUTE, ws or native.Workspace())
    assert step is not None, "these weights all have native kernels"
    return step


def run_poisoned(step: NativeMoEStep, x: torch.Tensor) -> torch.Tensor:
    step.ws.poison()
    out = step(x, out=torch.full_like(x, float("nan")))
    assert not out.isnan().any(), "some outputs were not written (or read a stale value)"
    return out


def torch_path(norm: RMSNorm, moe: MoEBlock, x: torch.Tensor) -> torch.Tensor:
    return x + moe(norm(x))


def shared_flip_allowance(norm: RMSNorm, moe: MoEBlock, x: torch.Tensor) -> torch.Tensor | float:
    """[T, D]: two int8 steps of the shared expert's intermediate per row, times the largest down weight of each
    output, times the token's gate (see the top)."""
    if moe.shared is None:
        return 0.0
    xn, ffn = norm(x), moe.shared.ffn
    h = F.silu(ffn.gate(xn)) * ffn.up(xn)  # [T, Fs]
    block = 256 if ffn.down.weight.qtype == Q.Q4_K else 32
    step = h.reshape(x.shape[0], -1, block).abs().amax(-1).amax(-1) / 127  # [T]
    w = ffn.down.weight.dense().abs().amax(1)  # [D]
    gate = 1.0 if moe.shared.gate_inp is None else torch.sigmoid(moe.shared.gate_inp(xn))
    return 2 * gate * step[:, None] * w[None, :]


def assert_close_to_torch_path(norm: RMSNorm, moe: MoEBlock, x: torch.Tensor, got: torch.Tensor) -> None:
    want = torch_path(norm, moe, x)
    bound = 1e-5 * (want - x).abs().max() + shared_flip_allowance(norm, moe, x)
    assert ((got - want).abs() <= bound).all(), f"max |diff| {(got - want).abs().max().item():.3g}"


CASES = [(q, t, k) for q in DIMS for t in (1, 3, 16) for k in (1, 2, 3, 4)]


@pytest.mark.parametrize("qtype,t,k", CASES, ids=[f"{q.name}-T{t}-k{k}" for q, t, k in CASES])
def test_step_matches_torch_path(qtype, t, k):
    i = CASES.index((qtype, t, k))
    n_experts, shared, normalize = (8, 64)[i % 2], i % 3 == 0, i % 4 < 2  # every combination with every type
    norm, moe = layer(qtype, n_experts, k, normalize, shared, seed=i)
    x = activations(t, DIMS[qtype][0], seed=i)
    routes = []
    moe.on_route = lambda *r: routes.append(r)
    got = run_poisoned(native_step(norm, moe), x)
    assert_close_to_torch_path(norm, moe, x, got)
    (layer_n, ids, probs), (_, ref_ids, ref_probs) = routes[:2]
    assert layer_n == 3 and ids.dtype == torch.int64 and torch.equal(ids, ref_ids)
    torch.testing.assert_close(probs, ref_probs, rtol=1e-5, atol=1e-7)


# DeepSeek-V3 / GLM-4.5 routing: sigmoid (or softmax) scores, a selection bias, expert groups, a weight scale, and
# an ungated shared expert
GROUPED = [("sigmoid", True, 1, 1, 2.5, False), ("sigmoid", True, 8, 3, 2.5, False), ("sigmoid", False, 4, 2, 1.0, True),
           ("softmax", True, 8, 2, 16.0, False), ("softmax", False, 2, 1, 1.0, True), ("sigmoid", True, 64, 4, 1.0, False)]


@pytest.mark.parametrize("t", [1, 3, 16])
@pytest.mark.parametrize("scoring,bias,groups,used,scale,gated", GROUPED,
                         ids=[f"{s}-bias{int(b)}-g{g}of{u}-x{c:g}-{'gated' if h else 'ungated'}"
                              for s, b, g, u, c, h in GROUPED])
def test_grouped_routing_step_matches_torch_path(t, scoring, bias, groups, used, scale, gated):
    i = GROUPED.index((scoring, bias, groups, used, scale, gated))
    grouped = dict(scoring=scoring, bias=bias, scale=scale, n_groups=groups, groups_used=used)
    norm, moe = layer(Q.Q8_0, 64, 4, i % 2 == 0, True, seed=20 + i, grouped=grouped, shared_gated=gated)
    x = activations(t, 64, seed=30 + i)
    routes = []
    moe.on_route = lambda *r: routes.append(r)
    got = run_poisoned(native_step(norm, moe), x)
    assert_close_to_torch_path(norm, moe, x, got)
    (_, ids, probs), (_, ref_ids, ref_probs) = routes[:2]
    assert torch.equal(ids.sort(-1).values, ref_ids.sort(-1).values)  # torch.topk may order ties either way
    torch.testing.assert_close(probs.sort(-1).values, ref_probs.sort(-1).values, rtol=1e-5, atol=1e-7)
    if groups > 1:
        assert max(len(set((row // (64 // groups)).tolist())) for row in ids) <= used


def test_grouped_routing_refuses_impossible_groups():
    norm, moe = layer(Q.Q8_0, 8, 2, True, False, grouped=dict(scoring="sigmoid", bias=True, scale=1.0, n_groups=2,
                                                               groups_used=1))
    spec = native_step(norm, moe).kernel.spec
    for bad in (dict(n_groups=3), dict(groups_used=3), dict(n_groups=8, groups_used=1, k=2), dict(scale=float("inf")),
                dict(n_groups=0), dict(n_groups=512)):
        with pytest.raises(KernelInputError, match="MoE layer refused"):
            native.MoELayer(native.MoESpec(**{**spec.__dict__, **bad}))
    with pytest.raises(KernelInputError, match="scoring"):
        native.MoELayer(native.MoESpec(**{**spec.__dict__, "scoring": "relu"}))
    with pytest.raises(KernelInputError, match="8 features"):
        native.MoELayer(native.MoESpec(**{**spec.__dict__, "selection_bias": torch.zeros(7)}))


@pytest.mark.parametrize("qtype", list(DIMS), ids=lambda q: q.name)
def test_batches_in_any_order_and_grouping_give_identical_output(qtype):
    x = activations(16, DIMS[qtype][0], seed=5)
    outs = []
    for order in ("all", "reversed", "random", "random"):
        norm, moe = layer(qtype, 64, 4, True, True, seed=11, order=order)
        outs.append(run_poisoned(native_step(norm, moe), x))
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_a_reused_workspace_gives_what_a_fresh_one_gives():
    ws = native.Workspace()
    big = layer(Q.Q4_K, 64, 4, False, True, seed=2)
    native_step(*big, ws)(activations(16, 256, seed=3))  # leaves larger buffers and another layer's route behind
    small = layer(Q.Q8_0, 8, 2, True, False, seed=4)
    x = activations(3, 64, seed=6)
    assert torch.equal(run_poisoned(native_step(*small, ws), x), run_poisoned(native_step(*small), x))


def test_each_row_is_independent_of_the_others_in_the_step():
    norm, moe = layer(Q.Q8_0, 8, 2, True, True, seed=7)
    step = native_step(norm, moe)
    x = activations(16, 64, seed=8)
    step(x)  # the largest step first: the one-row steps after it reuse its buffers
    for t in range(5):
        one = x[t:t + 1].clone()
        torch.testing.assert_close(step(one), step(x)[t:t + 1], rtol=0, atol=0)  # rows are independent


NAN_LAYERS = {  # the softmax router with a gated shared expert; DeepSeek's grouped sigmoid router, ungated
    "softmax": dict(n_experts=8, k=2, seed=9),
    "grouped": dict(n_experts=16, k=3, seed=12, shared_gated=False,
                    grouped=dict(scoring="sigmoid", bias=True, scale=2.5, n_groups=4, groups_used=2)),
}


@pytest.mark.parametrize("kind", sorted(NAN_LAYERS))
def test_nan_inputs_stay_in_their_rows(kind):
    spec = copy.deepcopy(NAN_LAYERS[kind])  # layer() consumes the grouped arguments
    norm, moe = layer(Q.Q8_0, spec.pop("n_experts"), spec.pop("k"), True, True, **spec)
    x = activations(3, 64, seed=10)
    x[1, 5] = float("nan")
    step = native_step(norm, moe)
    step.ws.poison()
    out = step(x)
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()


def test_refuses_bad_input():
    norm, moe = layer(Q.Q8_0, 8, 2, True, False)
    step = native_step(norm, moe)
    with pytest.raises(KernelInputError, match="64 columns"):
        step(torch.zeros(2, 32))
    with pytest.raises(KernelInputError, match="floating point"):
        step(torch.zeros(2, 64, dtype=torch.int32))
    assert step(torch.zeros(0, 64)).shape == (0, 64)  # nothing to route
    with pytest.raises(KernelInputError, match="out must be"):
        step(torch.zeros(2, 64), out=torch.zeros(3, 64))
    x = torch.randn(2, 64)
    with pytest.raises(KernelInputError, match="overlapping"):
        step(x, out=x)
    spec = step.kernel.spec
    for bad in (dict(k=9), dict(k=0), dict(eps=float("nan"))):  # values C refuses
        with pytest.raises(KernelInputError, match="MoE layer refused"):
            native.MoELayer(native.MoESpec(**{**spec.__dict__, **bad}))
    with pytest.raises(KernelInputError, match="64 features"):
        native.MoELayer(native.MoESpec(**{**spec.__dict__, "norm": torch.ones(32)}))


def test_refuses_a_source_that_misbehaves():
    norm, moe = layer(Q.Q8_0, 8, 2, True, False)
    step, source = native_step(norm, moe), moe.experts.source
    source.skip_last = True
    with pytest.raises(KernelInputError, match="did not hand over every routed expert"):
        step(torch.randn(4, 64))
    source.skip_last = False
    source.experts[1] = ExpertWeights(*(quantized_weight(Q.Q4_0, *m.shape, 1) for m in source.experts[1]))
    mixed = [(0, source.experts[0]), (1, source.experts[1])]
    x = native.check_x(step.kernel, torch.randn(16, 64))
    native.route(step.kernel, step.ws, x, 2)
    with pytest.raises(KernelInputError, match="one set of types"):
        native.experts(step.kernel, step.ws, x, torch.empty_like(x), mixed, 2)
    with pytest.raises(KernelInputError, match="out of range"):
        native.experts(step.kernel, step.ws, x, torch.empty_like(x), [(99, source.experts[0])], 2)
    other = native_step(*layer(Q.Q8_0, 8, 2, True, False, seed=1), step.ws)
    with pytest.raises(KernelInputError, match="without a route of this layer"):
        native.experts(other.kernel, step.ws, x, torch.empty_like(x), [(0, source.experts[0])], 2)


def test_weights_without_a_native_step_keep_the_torch_path():
    norm, moe = layer(Q.Q8_0, 8, 2, True, False)
    source = moe.experts.source
    f32_experts = [ExpertWeights(*(f32(m.dense()) for m in e)) for e in source.experts]
    assert NativeMoEStep.build(norm, MoEBlock(moe.router, ExpertFFNs(0, Source(f32_experts), COMPUTE)), COMPUTE,
                               native.Workspace()) is None  # F32 experts: BLAS, as kernels/dispatch.py does
    mixed = [ExpertWeights(quantized_weight(Q.F16, 96, 64), e.up, e.down) for e in source.experts]
    assert NativeMoEStep.build(norm, MoEBlock(moe.router, ExpertFFNs(0, Source(mixed), COMPUTE)), COMPUTE,
                               native.Workspace()) is None  # gate and up in different activation formats

    class Opaque:  # a source that cannot say its types
        acquire = source.acquire

    assert NativeMoEStep.build(norm, MoEBlock(moe.router, ExpertFFNs(0, Opaque(), COMPUTE)), COMPUTE,
                               native.Workspace()) is None
    assert NativeMoEStep.build(norm, moe, COMPUTE, None) is None  # no extension
    wide = RMSNorm(norm.weight[None, :], norm.eps)  # a [1, D] weight (a file may hold one): torch broadcasts it
    assert NativeMoEStep.build(wide, moe, COMPUTE, native.Workspace()) is None


GENERIC_CHECK = """
from gguf import GGMLQuantizationType as Q
from moestream.kernels import cpu
from tests.kernels.test_moe_step import activations, assert_close_to_torch_path, layer, native_step, run_poisoned
assert {tier for tier, _ in cpu.kernel_table().values()} == {"generic"}
for q in (Q.Q8_0, Q.Q4_K):
    norm, moe = layer(q, 8, 2, True, True, seed=1)
    x = activations(3, norm.weight.numel())
    assert_close_to_torch_path(norm, moe, x, run_poisoned(native_step(norm, moe), x))
print("generic ok")
"""


def test_generic_tier_matches_torch_path():
    env = dict(os.environ, MOESTREAM_KERNEL_TIER="generic")
    result = subprocess.run([sys.executable, "-c", GENERIC_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "generic ok" in result.stdout, result.stderr
