"""gpt-oss beyond the shared parity runner (test_hf_parity.py runs the tiny model against transformers: sinks, a
sliding window shorter than the prompt, YaRN without truncation, biased clamped experts): its experts stored as
MXFP4 as the released files store them, the harmony chat template rendered from the GGUF, and the sliding-window
layer plan read from the file where it states one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from moestream.engine.loader import load_model
from moestream.errors import GGUFFormatError
from moestream.formats.gguf import GGUFFile
from moestream.models.args import ModelArgs
from moestream.models.gpt_oss import window
from moestream.tokenizer.chat import ChatTemplate
from moestream.tokenizer.tokenizer import Tokenizer
from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.tiny_models import gguf_path, hf_model_dir, load_hf_model
from tests.models.test_hf_parity import PROMPT, hf_greedy, our_logits

MXFP4 = GGMLQuantizationType.MXFP4


def _mxfp4(data: np.ndarray) -> np.ndarray:
    return quants.quantize(np.ascontiguousarray(data, dtype=np.float32), MXFP4)


def _mxfp4_experts(items):
    """The expert matrices as MXFP4 (what the released gpt-oss files hold), everything else as it is."""
    for name, data, qtype in items:
        yield (name, _mxfp4(data), MXFP4) if name.endswith("_exps.weight") else (name, data, qtype)


def _rounded(t: torch.Tensor) -> torch.Tensor:
    """t [..., K] rounded through MXFP4 along its last dim."""
    return torch.from_numpy(quants.dequantize(_mxfp4(t.numpy()), MXFP4)).reshape(t.shape)


@torch.no_grad()
def _hf_with_mxfp4_experts():
    """transformers' model with its expert weights rounded as the MXFP4 file rounds them: gate_up_proj [E, D, 2F]
    and down_proj [E, F, D] hold the file's matrices transposed, whose rows run along D and F."""
    hf = load_hf_model("gpt-oss")
    for layer in hf.model.layers:
        experts = layer.mlp.experts
        for p in (experts.gate_up_proj, experts.down_proj):
            p.copy_(_rounded(p.transpose(1, 2).contiguous()).transpose(1, 2))
    return hf


def test_mxfp4_experts_agree_with_transformers_on_the_same_rounded_weights(tmp_path):
    path = copy_gguf(gguf_path("gpt-oss"), tmp_path / "mxfp4.gguf", edit_tensors=_mxfp4_experts)
    lm = load_model(path, progress=False)
    assert lm.experts.expert_types(0) == (MXFP4,) * 3
    hf = _hf_with_mxfp4_experts()
    tokens = PROMPT + hf_greedy(hf, PROMPT, 52)  # 64 teacher-forced positions
    with torch.no_grad():
        ref = hf(torch.tensor([tokens])).logits[0]
    ours = our_logits(path, tokens)
    # the native MXFP4 kernels round activations to 8 bits (as llama.cpp's do): close, not equal
    rel = (ours - ref).abs().amax(-1) / ref.abs().amax(-1)
    assert rel.max() <= 0.05, rel.max()
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95


def test_harmony_template_renders_from_the_gguf_as_transformers_renders_it():
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(hf_model_dir("gpt-oss"))
    gguf = GGUFFile(gguf_path("gpt-oss"))
    template, tok = ChatTemplate.from_gguf(gguf), Tokenizer.from_gguf(gguf)
    chat = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"}]
    ours = template.render(chat, add_generation_prompt=True)
    assert ours == hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert ours.endswith("<|start|>user<|message|>And 3 + 3?<|end|><|start|>assistant")
    assert "<|channel|>final<|message|>4<|end|>" in ours
    assert tok.encode(ours, add_bos=False) == hf_tok.encode(ours, add_special_tokens=False)
    # harmony: <|end|> closes a message (the model goes on to its final channel), <|return|> and <|call|> stop
    ids = {t: tok.vocab.token_to_id[t] for t in ("<|end|>", "<|return|>", "<|call|>")}
    assert ids["<|end|>"] not in tok.eog_ids and {ids["<|return|>"], ids["<|call|>"]} <= tok.eog_ids


def _with_pattern(pattern):
    def edit(meta):
        meta = dict(meta)
        vtype = meta["gpt-oss.block_count"][1]
        if isinstance(pattern, list):
            from gguf import GGUFValueType

            meta["gpt-oss.attention.sliding_window_pattern"] = (pattern, GGUFValueType.ARRAY, GGUFValueType.BOOL)
        else:
            meta["gpt-oss.attention.sliding_window_pattern"] = (pattern, vtype, None)
        return meta
    return edit


def test_sliding_layers_follow_the_files_pattern_or_the_architectures_rule(tmp_path):
    meta = GGUFFile(gguf_path("gpt-oss")).metadata
    args = ModelArgs.from_gguf(meta)
    assert [window(args, i) for i in range(2)] == [4, None]  # no pattern in the file: even layers slide
    flipped = copy_gguf(gguf_path("gpt-oss"), tmp_path / "flipped.gguf", edit_metadata=_with_pattern([False, True]))
    lm = load_model(flipped, progress=False)
    assert [b.attn.window for b in lm.model.blocks] == [None, 4]
    assert not torch.equal(our_logits(flipped, PROMPT), our_logits(gguf_path("gpt-oss"), PROMPT))
    none = copy_gguf(gguf_path("gpt-oss"), tmp_path / "none.gguf", edit_metadata=_with_pattern(1))
    assert [b.attn.window for b in load_model(none, progress=False).model.blocks] == [None, None]


def test_a_pattern_of_the_wrong_length_is_refused(tmp_path):
    bad = copy_gguf(gguf_path("gpt-oss"), tmp_path / "bad.gguf", edit_metadata=_with_pattern([True]))
    with pytest.raises(GGUFFormatError, match="sliding_window_pattern.*2 booleans"):
        load_model(bad, progress=False)
