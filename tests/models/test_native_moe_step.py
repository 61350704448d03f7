"""Every MoE architecture's tiny converted model with the native MoE step against the same model on the PyTorch path
(the step switched off per block): greedy tokens identical, logits equal up to an int8 rounding step that an ulp of
difference in the norm or router can flip (see tests/kernels/test_moe_step.py), identical routing traces; and the
step is chosen exactly where the weights allow it."""

from __future__ import annotations

import io
import json

import pytest
import torch

from moestream.engine.loader import load_model
from moestream.engine.trace import RoutingRecorder
from tests.cache.streaming_helpers import greedy_logits
from tests.fixtures.tiny_models import MOE_ARCHS, gguf_path


def torch_path(lm):
    """Context: the model's blocks without their native MoE step, restored after."""
    class Off:
        def __enter__(self):
            self.steps = [b.native_ffn for b in lm.model.blocks]
            for b in lm.model.blocks:
                b.native_ffn = None

        def __exit__(self, *exc):
            for b, s in zip(lm.model.blocks, self.steps):
                b.native_ffn = s

    return Off()


# gpt-oss's experts (per-expert biases, clamped SwiGLU; layers/biased_experts.py) run in PyTorch per expert over
# the native matmuls: the native step does not implement them, and must not be chosen for them
NATIVE_STEP_ARCHS = [arch for arch in MOE_ARCHS if arch != "gpt-oss"]


def test_gpt_oss_keeps_the_torch_path():
    lm = load_model(gguf_path("gpt-oss", "q8_0"), progress=False)
    assert all(b.native_ffn is None for b in lm.model.blocks)


@pytest.mark.parametrize("arch", NATIVE_STEP_ARCHS)
def test_native_step_agrees_with_the_torch_path(arch):
    lm = load_model(gguf_path(arch, "q8_0"), progress=False)
    assert all(b.native_ffn is not None for b in lm.model.blocks if hasattr(b.ffn, "router"))
    native = greedy_logits(lm, 12)
    with torch_path(lm):
        ref = greedy_logits(lm, 12)
    for step, (a, b) in enumerate(zip(native, ref)):
        assert int(a.argmax()) == int(b.argmax()), f"step {step}"
        assert (a - b).abs().max() <= 1e-2 * b.abs().max(), f"step {step}"


def trace(lm) -> list[dict]:
    out = io.StringIO()
    recorder = RoutingRecorder(lm.model, out, ahead=1)
    recorder.new_sequence()
    greedy_logits(lm, 6)
    for b in lm.model.blocks:
        b.ffn.on_route = None
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("arch", ["mixtral", "qwen2moe"])
def test_traces_are_the_same_on_both_paths(arch):
    lm = load_model(gguf_path(arch, "q8_0"), progress=False)
    native = trace(lm)
    with torch_path(lm):
        ref = trace(lm)
    assert len(native) == len(ref) == 7 * lm.args.n_layers
    for a, b in zip(native, ref):
        assert (a["layer"], a["positions"], a["experts"]) == (b["layer"], b["positions"], b["experts"])
        assert torch.allclose(torch.tensor(a["probs"]), torch.tensor(b["probs"]), atol=2e-5)
        assert a["ahead"].keys() == b["ahead"].keys()


def test_f32_experts_keep_the_torch_path():
    lm = load_model(gguf_path("mixtral", "f32"), progress=False)
    assert all(b.native_ffn is None for b in lm.model.blocks)  # BLAS beats the native F32 dot for prefill
