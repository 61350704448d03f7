"""A deterministic, very small Mixtral-shaped GGUF (2 layers, 4 experts, top-2, d_model 64, a 300-token
byte-level BPE vocabulary), written with the `gguf` package. Its header is ~7 KB, so a coverage-guided fuzzer
spends its mutations on structure and hyper-parameters rather than on thousands of vocabulary strings, and a
valid mutant loads and generates in milliseconds. Random weights: it writes noise, which is all a fuzzer needs."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from moestream.tokenizer.bpe import byte_to_unicode

D, F, E, K, LAYERS, HEADS, KV_HEADS = 64, 64, 4, 2, 2, 4, 2
WORDS = ["Ġt", "he", "Ġa", "in", "Ġthe", "er", "on", "Ġo", "re", "at", "en", "nd", "Ġs", "Ġw", "ed", "is", "it",
         "Ġh", "ou", "Ġan"]


def vocabulary() -> tuple[list[str], list[str]]:
    """256 byte tokens, a few merged words, then padding tokens up to 300; merges that build the words."""
    tokens = list(byte_to_unicode()) + WORDS
    merges = [f"{w[0]} {w[1]}" for w in WORDS if len(w) == 2] + ["Ġt he", "Ġa n"]
    tokens += [f"<pad{i}>" for i in range(300 - len(tokens) - 1)] + ["<|endoftext|>"]
    return tokens, merges


def write(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    _metadata(w)
    tokens, merges = vocabulary()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<") else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    for name, shape, qtype in _tensors(len(tokens)):
        w.add_tensor(name, _data(rng, shape, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _metadata(w: gguf.GGUFWriter) -> None:
    w.add_block_count(LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(D // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(E)
    w.add_expert_used_count(K)


def _tensors(vocab: int):
    q8, f32 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32
    hd = D // HEADS
    yield "token_embd.weight", (vocab, D), q8
    for i in range(LAYERS):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (D,), f32
        yield p + "attn_q.weight", (HEADS * hd, D), q8
        yield p + "attn_k.weight", (KV_HEADS * hd, D), q8
        yield p + "attn_v.weight", (KV_HEADS * hd, D), q8
        yield p + "attn_output.weight", (D, HEADS * hd), q8
        yield p + "ffn_norm.weight", (D,), f32
        yield p + "ffn_gate_inp.weight", (E, D), f32
        yield p + "ffn_gate_exps.weight", (E, F, D), q8
        yield p + "ffn_up_exps.weight", (E, F, D), q8
        yield p + "ffn_down_exps.weight", (E, D, F), q8
    yield "output_norm.weight", (D,), f32
    yield "output.weight", (vocab, D), q8


def _data(rng: np.random.Generator, shape: tuple[int, ...], qtype) -> np.ndarray:
    values = rng.normal(0, 0.1, size=shape).astype(np.float32)
    if len(shape) == 1:
        values += 1.0  # norm weights near 1
    return values if qtype == gguf.GGMLQuantizationType.F32 else gguf.quantize(values, qtype)
