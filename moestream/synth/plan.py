"""The tensor table of a synthetic model: names, shapes and types in file order, and the exact file size."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType

from ..errors import ConfigError
from .presets import Preset

F32 = GGMLQuantizationType.F32
QTYPES = {"q4_0": GGMLQuantizationType.Q4_0, "q8_0": GGMLQuantizationType.Q8_0}
EXPERT_QTYPES = {"mxfp4": GGMLQuantizationType.MXFP4}  # only for a preset's experts (Preset.expert_qtype)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # row-major (torch order): the last dimension is the row (fan-in)
    qtype: GGMLQuantizationType

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.n_elements // block * type_size

    @property
    def fan_in(self) -> int:
        return self.shape[-1]

    @property
    def is_norm(self) -> bool:
        return self.name.endswith("norm.weight")


def qtype_of(name: str) -> GGMLQuantizationType:
    if name not in QTYPES:
        raise ConfigError(f"unknown quant type '{name}' (known: {', '.join(sorted(QTYPES))})")
    return QTYPES[name]


def tensor_plan(p: Preset, q: GGMLQuantizationType) -> list[TensorSpec]:
    """All tensors in file order. Norms and the router are F32 (as the converter writes them); every matrix,
    embeddings and output included, uses `q`."""
    plan = [TensorSpec("token_embd.weight", (p.vocab, p.d_model), q)]
    for i in range(p.n_layers):
        plan += _layer(p, q, f"blk.{i}.", dense=i < p.routing.n_dense_leading)
    plan += [TensorSpec("output_norm.weight", (p.d_model,), F32), TensorSpec("output.weight", (p.vocab, p.d_model), q)]
    for t in plan:
        block = GGML_QUANT_SIZES[t.qtype][0]
        if t.qtype != F32 and t.fan_in % block:
            raise ConfigError(f"preset '{p.name}': {t.name} has rows of {t.fan_in}, not a multiple of "
                              f"{t.qtype.name}'s block {block}")
    return plan


def _layer(p: Preset, q: GGMLQuantizationType, b: str, dense: bool) -> list[TensorSpec]:
    d = p.d_model
    out = [TensorSpec(b + "attn_norm.weight", (d,), F32)]
    out += _latent_attention(p, q, b) if p.latent else _attention(p, q, b)
    out.append(TensorSpec(b + p.ffn_norm + ".weight", (d,), F32))
    if dense:
        return out + _ffn(b + "ffn_{}.weight", p.ff_dense, d, q)
    r, e, f = p.routing, p.n_experts, p.ff_expert
    out.append(TensorSpec(b + "ffn_gate_inp.weight", (e, d), F32))
    if r.selection_bias:
        out.append(TensorSpec(b + "exp_probs_b.bias", (e,), F32))
    out += _ffn(b + "ffn_{}_exps.weight", f, d, EXPERT_QTYPES.get(p.expert_qtype, q), lead=(e,))
    if p.oss is not None:  # router and per-expert biases
        out += [TensorSpec(b + "ffn_gate_inp.bias", (e,), F32), TensorSpec(b + "ffn_gate_exps.bias", (e, f), F32),
                TensorSpec(b + "ffn_up_exps.bias", (e, f), F32), TensorSpec(b + "ffn_down_exps.bias", (e, d), F32)]
    if r.n_shared:
        out += _ffn(b + "ffn_{}_shexp.weight", r.n_shared * p.ff_expert, d, q)
    return out


def _attention(p: Preset, q: GGMLQuantizationType, b: str) -> list[TensorSpec]:
    d, q_width, kv_width = p.d_model, p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim
    out = [TensorSpec(b + "attn_q.weight", (q_width, d), q), TensorSpec(b + "attn_k.weight", (kv_width, d), q),
           TensorSpec(b + "attn_v.weight", (kv_width, d), q)]
    if p.attn_bias:
        out += [TensorSpec(b + f"attn_{x}.bias", (w,), F32) for x, w in (("q", q_width), ("k", kv_width),
                                                                         ("v", kv_width))]
    out.append(TensorSpec(b + "attn_output.weight", (d, q_width), q))
    if p.oss is not None:
        out += [TensorSpec(b + "attn_output.bias", (d,), F32), TensorSpec(b + "attn_sinks.weight", (p.n_heads,), F32)]
    if p.qk_norm:
        out += [TensorSpec(b + "attn_q_norm.weight", (p.head_dim,), F32),
                TensorSpec(b + "attn_k_norm.weight", (p.head_dim,), F32)]
    return out


def _latent_attention(p: Preset, q: GGMLQuantizationType, b: str) -> list[TensorSpec]:
    d, h, m = p.d_model, p.n_heads, p.latent
    return [
        TensorSpec(b + "attn_q_a.weight", (m.q_lora_rank, d), q),
        TensorSpec(b + "attn_q_a_norm.weight", (m.q_lora_rank,), F32),
        TensorSpec(b + "attn_q_b.weight", (h * (m.nope_dim + m.rope_dim), m.q_lora_rank), q),
        TensorSpec(b + "attn_kv_a_mqa.weight", (m.kv_lora_rank + m.rope_dim, d), q),
        TensorSpec(b + "attn_kv_a_norm.weight", (m.kv_lora_rank,), F32),
        TensorSpec(b + "attn_k_b.weight", (h, m.kv_lora_rank, m.nope_dim), q),
        TensorSpec(b + "attn_v_b.weight", (h, m.v_dim, m.kv_lora_rank), q),
        TensorSpec(b + "attn_output.weight", (d, h * m.v_dim), q),
    ]


def _ffn(pattern: str, f: int, d: int, q: GGMLQuantizationType, lead: tuple[int, ...] = ()) -> list[TensorSpec]:
    return [TensorSpec(pattern.format("gate"), lead + (f, d), q), TensorSpec(pattern.format("up"), lead + (f, d), q),
            TensorSpec(pattern.format("down"), lead + (d, f), q)]


def aligned(n: int, align: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    return (n + align - 1) // align * align


def file_size(header_bytes: int, plan: list[TensorSpec]) -> int:
    """Exact size of the file: the header padded to the alignment, then every tensor padded likewise."""
    return aligned(header_bytes) + sum(aligned(t.nbytes) for t in plan)
