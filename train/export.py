"""Write the trained Hugging Face Mixtral model and its BPE as a GGUF, through moestream's own writing path
(`moestream.synth`'s metadata, the `gguf` package's writer and Q8_0 quantizer), laid out as llama.cpp lays out
Mixtral: architecture `llama`, merged `ffn_{gate,up,down}_exps`, Q/K rows permuted for llama.cpp's RoPE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import quantize

from moestream.synth.presets import Preset
from moestream.synth.writer import add_model_metadata

from .bpe import TrainedBPE

Q8_0 = GGMLQuantizationType.Q8_0
F32 = GGMLQuantizationType.F32
# A text model, not a chat model: a conversation is its turns as paragraphs, and the reply is the next paragraph.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] | trim }}\n\n{% endfor %}"


def preset_of(config) -> Preset:
    return Preset(name="default", title="moestream tiny Mixtral", arch="llama", n_layers=config.num_hidden_layers,
                  d_model=config.hidden_size, n_heads=config.num_attention_heads,
                  n_kv_heads=config.num_key_value_heads, head_dim=config.hidden_size // config.num_attention_heads,
                  n_experts=config.num_local_experts, n_experts_used=config.num_experts_per_tok,
                  ff_expert=config.intermediate_size, ff_dense=config.intermediate_size,
                  vocab=config.vocab_size, context=config.max_position_embeddings, rope_base=config.rope_parameters["rope_theta"],
                  rms_eps=config.rms_norm_eps, qk_norm=False, tokenizer="bpe", tokenizer_pre="gpt-2")


def export_gguf(model, bpe: TrainedBPE, out: Path, name: str) -> None:
    p = preset_of(model.config)
    w = GGUFWriter(str(out), p.arch)
    add_model_metadata(w, p, Q8_0, name=name)
    add_trained_vocab(w, bpe)
    for tensor_name, array, qtype in gguf_tensors(model, p):
        data = quantize(array, qtype) if qtype == Q8_0 else array
        w.add_tensor(tensor_name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def add_trained_vocab(w: GGUFWriter, bpe: TrainedBPE) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(bpe.tokens)
    w.add_token_types([TokenType.CONTROL if i == bpe.eot_id else TokenType.NORMAL for i in range(len(bpe.tokens))])
    w.add_token_merges(bpe.merges)
    w.add_bos_token_id(bpe.eot_id)
    w.add_eos_token_id(bpe.eot_id)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def gguf_tensors(model, p: Preset):
    """(GGUF name, float32 array in GGUF's numpy shape, type to store) for every tensor."""
    sd = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    yield "token_embd.weight", sd["model.embed_tokens.weight"], Q8_0
    for i in range(p.n_layers):
        yield from _layer(sd, f"model.layers.{i}.", f"blk.{i}.", p)
    yield "output_norm.weight", sd["model.norm.weight"], F32
    yield "output.weight", sd["lm_head.weight"], Q8_0


def _layer(sd: dict, hf: str, gg: str, p: Preset):
    ff = p.ff_expert
    gate_up = sd[hf + "mlp.experts.gate_up_proj"]  # [E, 2*ff, D]: gate rows first, then up
    yield gg + "attn_norm.weight", sd[hf + "input_layernorm.weight"], F32
    yield gg + "attn_q.weight", permute_rope(sd[hf + "self_attn.q_proj.weight"], p.n_heads), Q8_0
    yield gg + "attn_k.weight", permute_rope(sd[hf + "self_attn.k_proj.weight"], p.n_kv_heads), Q8_0
    yield gg + "attn_v.weight", sd[hf + "self_attn.v_proj.weight"], Q8_0
    yield gg + "attn_output.weight", sd[hf + "self_attn.o_proj.weight"], Q8_0
    yield gg + "ffn_norm.weight", sd[hf + "post_attention_layernorm.weight"], F32
    yield gg + "ffn_gate_inp.weight", sd[hf + "mlp.gate.weight"], F32  # the router stays exact
    yield gg + "ffn_gate_exps.weight", np.ascontiguousarray(gate_up[:, :ff]), Q8_0
    yield gg + "ffn_up_exps.weight", np.ascontiguousarray(gate_up[:, ff:]), Q8_0
    yield gg + "ffn_down_exps.weight", sd[hf + "mlp.experts.down_proj"], Q8_0  # [E, D, ff]


def permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rotates the two halves of each head; GGUF's llama rotates adjacent pairs: reorder each head's rows."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
