"""gpt-oss-20b / 120b (GGUF architecture `gpt-oss`): GQA attention with Q/K/V/O biases, a learned sink logit per
head and a sliding window on alternate layers (layers/sink_attention.py); YaRN RoPE (NeoX halves) without
rounding the ramp's ends (transformers' `truncate: false`, the reference implementation's rule); a router with
a bias whose top-k logits are softmaxed (= softmax over all experts, renormalised over the k); experts with
per-expert biases and the clamped SwiGLU (layers/biased_experts.py), usually stored as MXFP4.

From the file: attention.sliding_window (W) and, where present, attention.sliding_window_pattern; files written
by llama.cpp's converter carry no pattern, and then the architecture's rule applies: even layers slide (0, 2,
...), odd ones see the whole context, as transformers' `layer_types` and llama.cpp's period of 2 say. The
activation's constants are not in the file either: they are the architecture's (transformers' GptOssConfig)."""

from __future__ import annotations

from typing import Iterator

from ..layers.attention import AttentionWeights
from ..layers.biased_experts import BiasedExpertFFNs, ExpertBiases
from ..layers.moe import MoEBlock, Router
from ..layers.rope import Rope
from ..layers.sink_attention import SinkAttention
from .args import ModelArgs, swa_pattern
from .decoder import ArchSpec, Weights

SWA_PERIOD = 2  # without attention.sliding_window_pattern: in every 2 layers, the first slides
SWIGLU_ALPHA, SWIGLU_LIMIT = 1.702, 7.0


def window(a: ModelArgs, layer: int) -> int | None:
    """The keys a query of `layer` sees (None: all)."""
    sliding = a.swa_layers or swa_pattern(SWA_PERIOD, a.n_layers)
    return a.sliding_window if a.sliding_window and sliding[layer] else None


def build_attention(w: Weights, p: str, layer: int, a: ModelArgs, rope: Rope) -> SinkAttention:
    aw = AttentionWeights(*(w.linear(p + f"attn_{part}.weight", p + f"attn_{part}.bias")
                            for part in ("q", "k", "v", "output")))
    return SinkAttention(layer, aw, a.n_heads, a.n_kv_heads, a.head_dim, rope, w.vector(p + "attn_sinks.weight"),
                         window(a, layer))


def build_moe(w: Weights, p: str, layer: int, a: ModelArgs, experts, compute) -> MoEBlock:
    router = Router(w.linear(p + "ffn_gate_inp.weight", p + "ffn_gate_inp.bias"), a.n_experts_used, normalize=True)
    biases = ExpertBiases(*(w.vector(p + f"ffn_{part}_exps.bias") for part in ("gate", "up", "down")))
    ffns = BiasedExpertFFNs(layer, experts, biases, compute, SWIGLU_ALPHA, SWIGLU_LIMIT)
    return MoEBlock(router, ffns, layer=layer)


def attention_shapes(a: ModelArgs, p: str, present) -> Iterator[tuple[str, list, bool]]:
    D, q, kv = a.d_model, a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
    for part, rows, cols in (("q", q, D), ("k", kv, D), ("v", kv, D), ("output", D, q)):
        yield p + f"attn_{part}.weight", [(rows, cols)], True
        yield p + f"attn_{part}.bias", [(rows,), (1, rows)], True
    yield p + "attn_sinks.weight", [(a.n_heads,), (1, a.n_heads)], True


def moe_shapes(a: ModelArgs, p: str) -> Iterator[tuple[str, list, bool]]:
    E, F, D = a.n_experts, a.ff_expert, a.d_model
    yield p + "ffn_gate_inp.bias", [(E,), (1, E)], True
    for part, width in (("gate", F), ("up", F), ("down", D)):
        yield p + f"ffn_{part}_exps.bias", [(E, width)], True


SPEC = ArchSpec(name="gpt-oss", rope="neox", norm_topk=True, ffn_norm="post_attention_norm",
                attention=build_attention, attention_shapes=attention_shapes, moe=build_moe, moe_shapes=moe_shapes,
                yarn_truncate=False, sliding_window=window)
