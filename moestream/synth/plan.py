"""The tensor table of a synthetic model: names, shapes and types in file order, and the exact file size."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType

from ..errors import ConfigError
from .presets import Preset

F32 = GGMLQuantizationType.F32
QTYPES = {"q4_0": GGMLQuantizationType.Q4_0, "q8_0": GGMLQuantizationType.Q8_0}


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
    block = GGML_QUANT_SIZES[q][0]
    for width in (p.d_model, p.ff_expert, p.n_heads * p.head_dim):
        if width % block:
            raise ConfigError(f"preset '{p.name}': row width {width} is not a multiple of {q.name}'s block {block}")
    plan = [TensorSpec("token_embd.weight", (p.vocab, p.d_model), q)]
    for i in range(p.n_layers):
        plan += _layer(p, q, f"blk.{i}.")
    return plan + [TensorSpec("output_norm.weight", (p.d_model,), F32),
                   TensorSpec("output.weight", (p.vocab, p.d_model), q)]


def _layer(p: Preset, q: GGMLQuantizationType, b: str) -> list[TensorSpec]:
    d, q_width, kv_width = p.d_model, p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim
    out = [
        TensorSpec(b + "attn_norm.weight", (d,), F32),
        TensorSpec(b + "attn_q.weight", (q_width, d), q),
        TensorSpec(b + "attn_k.weight", (kv_width, d), q),
        TensorSpec(b + "attn_v.weight", (kv_width, d), q),
        TensorSpec(b + "attn_output.weight", (d, q_width), q),
    ]
    if p.qk_norm:
        out += [TensorSpec(b + "attn_q_norm.weight", (p.head_dim,), F32),
                TensorSpec(b + "attn_k_norm.weight", (p.head_dim,), F32)]
    return out + [
        TensorSpec(b + "ffn_norm.weight", (d,), F32),
        TensorSpec(b + "ffn_gate_inp.weight", (p.n_experts, d), F32),
        TensorSpec(b + "ffn_gate_exps.weight", (p.n_experts, p.ff_expert, d), q),
        TensorSpec(b + "ffn_up_exps.weight", (p.n_experts, p.ff_expert, d), q),
        TensorSpec(b + "ffn_down_exps.weight", (p.n_experts, d, p.ff_expert), q),
    ]


def aligned(n: int, align: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    return (n + align - 1) // align * align


def file_size(header_bytes: int, plan: list[TensorSpec]) -> int:
    """Exact size of the file: the header padded to the alignment, then every tensor padded likewise."""
    return aligned(header_bytes) + sum(aligned(t.nbytes) for t in plan)
