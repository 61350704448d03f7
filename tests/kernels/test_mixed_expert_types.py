"""An expert whose gate and up matrices are in types with different activation formats (F16 takes float
activations, Q8_0 takes Q8_0 blocks) cannot go to the fused kernel, which quantizes x once for both. Such files
exist (quantizers choose per tensor); they must take the reference path, not fail with a native error code."""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType as Q

from moestream.formats.weight import ExpertWeights
from moestream.kernels import reference
from moestream.kernels.dispatch import Compute
from tests.kernels.test_kernels import activations, quantized_weight


def test_gate_and_up_with_different_activation_formats_take_a_working_path():
    d, f, t = 64, 96, 5
    experts = [ExpertWeights(quantized_weight(Q.F16, f, d, seed=e), quantized_weight(Q.Q8_0, f, d, seed=10 + e),
                             quantized_weight(Q.Q8_0, d, f, seed=20 + e)) for e in range(2)]
    x = activations(t, d)
    offsets = torch.tensor([0, 3, t], dtype=torch.int32)
    rows = torch.arange(t, dtype=torch.int32)
    weights = torch.linspace(0.2, 1.0, t)
    out = Compute(threads=2).moe_ffn(x, experts, offsets, rows, weights)
    spans = [rows[0:3].long(), rows[3:t].long()]
    expected = reference.moe_ffn(x, experts, spans, [weights[0:3], weights[3:t]])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
