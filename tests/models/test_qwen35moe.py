"""Qwen3.5-MoE beyond the shared parity runner (test_hf_parity.py runs the tiny hybrid model against transformers,
prefill and token by token): what its sequences keep, and what they refuse. The Gated DeltaNet layers keep a
fixed-size recurrent state per sequence beside the full-attention layer's KV rows; that state cannot be rolled
back, so speculative decoding (which forgets rejected guesses) is refused up front."""

from __future__ import annotations

import pytest
import torch

from moestream.engine import Engine, EngineConfig
from moestream.engine.loader import load_model
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.errors import ConfigError
from moestream.layers.gated_attention import GatedAttention
from moestream.layers.gated_deltanet import GatedDeltaNet
from tests.fixtures.tiny_models import gguf_path
from tests.models.test_hf_parity import PROMPT


def test_linear_layers_keep_a_fixed_state_and_the_attention_layer_its_rows():
    lm = load_model(gguf_path("qwen35moe"), progress=False)
    assert [type(b.attn) for b in lm.model.blocks] == [GatedDeltaNet] * 3 + [GatedAttention]
    seq = new_sequence(lm.model, [], 64)
    with torch.inference_mode():
        forward_logits(lm.model, seq, PROMPT)
        sizes = {layer: [tuple(t.shape) for t in state] for layer, state in seq.kv.states.items()}
        forward_logits(lm.model, seq, [17, 18])
    channels = 2 * 2 * 16 + 4 * 16  # q and k of 2 key heads, v of 4 value heads
    assert sizes == {layer: [(3, channels), (4, 16, 16)] for layer in range(3)}  # window K-1 = 3; S per value head
    assert {layer: [tuple(t.shape) for t in s] for layer, s in seq.kv.states.items()} == sizes  # does not grow
    assert seq.kv.lengths == [len(PROMPT) + 2] * 4


def test_the_state_cannot_be_rolled_back():
    lm = load_model(gguf_path("qwen35moe"), progress=False)
    seq = new_sequence(lm.model, [], 64)
    with torch.inference_mode():
        forward_logits(lm.model, seq, PROMPT)
    seq.kv.truncate(len(PROMPT))  # forgetting nothing is fine
    with pytest.raises(ConfigError, match="linear-attention layer's state has absorbed them"):
        seq.kv.truncate(len(PROMPT) - 1)


def test_speculative_decoding_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="--draft ngram: the model \\(qwen35moe\\) has linear-attention layers"):
        Engine.open(gguf_path("qwen35moe"), EngineConfig(progress=False, draft="ngram"))


@pytest.fixture(scope="module")
def header():
    """The q8_0 file's header, parsed once (gguf-py takes ~11 s over its 150k-token vocabulary; each edit is then
    a clone and a write)."""
    from tests.fuzz.gguf_model import read_header

    return read_header(gguf_path("qwen35moe", "q8_0"))


def _edited(tmp_path, header, **values):
    h = header.clone()
    for key, value in values.items():
        kv = h.kv(f"qwen35moe.{key.replace('__', '.')}")
        kv.value, kv.raw = value, None
    return h.write(tmp_path / "edited.gguf")


@pytest.mark.parametrize("values, message", [
    (dict(ssm__time_step_rank=3), "ssm.time_step_rank' 3 value heads are not a multiple of ssm.group_count 2"),
    (dict(ssm__inner_size=63), "ssm.inner_size' 63 does not split into ssm.time_step_rank 4 heads"),
    (dict(attention__recurrent_layers=[True, True]), "attention.recurrent_layers' must be 4 booleans"),
    (dict(ssm__state_size=17), "tensor blk.0.attn_qkv.weight has shape \\[128, 64\\]"),
])
def test_inconsistent_linear_attention_metadata_is_a_clear_error(tmp_path, header, values, message):
    from moestream.errors import GGUFFormatError

    with pytest.raises(GGUFFormatError, match=message):
        load_model(_edited(tmp_path, header, **values), progress=False)
