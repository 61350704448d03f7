"""The default model's export path: a Hugging Face Mixtral and a trained BPE written by train/export.py load in
moestream with the same logits as transformers (Q8_0 rounding aside) and the same tokenization as `tokenizers`."""

from __future__ import annotations

import torch
from transformers import MixtralConfig, MixtralForCausalLM

from moestream.engine.sequence import forward_logits, new_sequence
from moestream.engine.loader import load_model
from moestream.tokenizer import Tokenizer
from train.bpe import train_bpe
from train.corpus import clean
from train.export import export_gguf

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. \"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that Netherfield "
        "Park is let at last?\" Mr. Bennet replied that he had not. Café, naïve — and 1813.\n\n")


def tiny_hf(vocab: int) -> MixtralForCausalLM:
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=128, rope_parameters={"rope_type": "default", "rope_theta": 1e4},
                           rms_norm_eps=1e-5, tie_word_embeddings=False)
    return MixtralForCausalLM(config).eval()


def test_exported_model_matches_transformers_and_tokenizers(tmp_path):
    bpe = train_bpe([TEXT * 4], vocab_size=300)
    hf = tiny_hf(len(bpe.tokens))
    path = tmp_path / "tiny.gguf"
    export_gguf(hf, bpe, path, name="test")
    tok = Tokenizer.from_gguf(path)
    sample = "Mr. Bennet said, \"Café at Netherfield?\" — 1813 or 2024!"
    ids = tok.encode(sample)
    assert ids == bpe.encode(sample)
    assert tok.decode(ids) == sample
    lm = load_model(path, progress=False)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0, -1]
    with torch.inference_mode():
        ours = forward_logits(lm.model, new_sequence(lm.model, ids, 128), ids)
    lm.close()
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    assert rel < 0.03, f"max |diff| / max |logit| = {rel:.3f} (Q8_0 weights)"
    assert torch.corrcoef(torch.stack([ours, ref]))[0, 1] > 0.999


def test_corpus_cleaning_drops_gutenberg_matter_and_unwraps_paragraphs():
    raw = ("Produced by An Anonymous Volunteer\n\n\nCHAPTER I\n\n\u201cWell,\u201d said _she_,\nlooking up\r\n"
           "at him.\n\nEnd of the Project Gutenberg EBook of Emma, by Jane Austen\n\nlicence text")
    assert clean(raw) == ["CHAPTER I", "\"Well,\" said she, looking up at him."]
