"""Qwen3.5-MoE (GGUF architecture `qwen35moe`): a hybrid stack whose layers are either
Gated DeltaNet linear attention (layers/gated_deltanet.py: a fixed-size state per sequence, no KV rows) or gated
full attention (layers/gated_attention.py: per-head Q/K norms, partial NeoX RoPE, a sigmoid output gate), as the
file's ssm.* keys and layer plan say (models/args.py LinearAttention); every layer's FFN is the softmax top-k MoE
with a sigmoid-gated shared expert, as Qwen2-MoE's.

The converter writes the norms with transformers' "1 +" already added (except the DeltaNet's own gated norm),
A_log as ssm_a = -exp(A_log), and the value heads in tiled order, so nothing is re-derived here. Qwen3.5's
multimodal RoPE sections (rope.dimension_sections) rotate every section by the same position for text, which is
plain RoPE."""

from __future__ import annotations

from typing import Iterator

from ..layers.attention import AttentionWeights
from ..layers.gated_attention import GatedAttention
from ..layers.gated_deltanet import DeltaNetWeights, GatedDeltaNet
from ..layers.rope import Rope
from .args import ModelArgs
from .decoder import ArchSpec, Weights


def build_attention(w: Weights, p: str, layer: int, a: ModelArgs, rope: Rope):
    if a.is_linear_layer(layer):
        return _deltanet(w, p, layer, a)
    return gated_attention(w, p, layer, a, rope)


def gated_attention(w: Weights, p: str, layer: int, a: ModelArgs, rope: Rope) -> GatedAttention:
    aw = AttentionWeights(q=w.linear(p + "attn_q.weight"), k=w.linear(p + "attn_k.weight"),
                          v=w.linear(p + "attn_v.weight"), o=w.linear(p + "attn_output.weight"),
                          q_norm=w.norm(p + "attn_q_norm.weight", a.rms_eps),
                          k_norm=w.norm(p + "attn_k_norm.weight", a.rms_eps))
    return GatedAttention(layer, aw, a.n_heads, a.n_kv_heads, a.head_dim, rope)


def _deltanet(w: Weights, p: str, layer: int, a: ModelArgs) -> GatedDeltaNet:
    beta, alpha = w.linear(p + "ssm_beta.weight"), w.linear(p + "ssm_alpha.weight")
    return deltanet(w, p, layer, a, beta, alpha, tiled=True)


def deltanet(w: Weights, p: str, layer: int, a: ModelArgs, beta, alpha, tiled: bool) -> GatedDeltaNet:
    """A Gated DeltaNet layer from its tensors (beta and alpha projections given: files store them apart or
    together)."""
    n = a.linear
    dw = DeltaNetWeights(
        qkv=w.linear(p + "attn_qkv.weight"), gate=w.linear(p + "attn_gate.weight"), beta=beta, alpha=alpha,
        conv=w.vector(p + "ssm_conv1d.weight").reshape(n.conv_channels, n.conv_kernel),
        dt_bias=w.vector(p + "ssm_dt.bias").reshape(-1), a=w.vector(p + "ssm_a").reshape(-1),
        norm=w.norm(p + "ssm_norm.weight", a.rms_eps), out=w.linear(p + "ssm_out.weight"))
    return GatedDeltaNet(layer, dw, n.k_heads, n.v_heads, n.k_dim, n.v_dim, tiled=tiled)


def attention_shapes(a: ModelArgs, p: str, present) -> Iterator[tuple[str, list, bool]]:
    yield from _shared_shapes(a, p)
    if a.is_linear_layer(int(p.split(".")[1])):
        hv, D = a.linear.v_heads, a.d_model
        yield p + "ssm_beta.weight", [(hv, D)], True
        yield p + "ssm_alpha.weight", [(hv, D)], True


def _shared_shapes(a: ModelArgs, p: str) -> Iterator[tuple[str, list, bool]]:
    """Every tensor of a layer but the DeltaNet's beta and alpha projections."""
    D, layer = a.d_model, int(p.split(".")[1])
    if not a.is_linear_layer(layer):
        q, kv = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        for name, shape in (("attn_q.weight", (2 * q, D)), ("attn_k.weight", (kv, D)), ("attn_v.weight", (kv, D)),
                            ("attn_output.weight", (D, q))):
            yield p + name, [shape], True
        for name in ("attn_q_norm.weight", "attn_k_norm.weight"):
            yield p + name, _vector(a.head_dim), True
        return
    n = a.linear
    hv, values = n.v_heads, n.v_heads * n.v_dim
    for name, shape in (("attn_qkv.weight", (n.conv_channels, D)), ("attn_gate.weight", (values, D)),
                        ("ssm_out.weight", (D, values))):
        yield p + name, [shape], True
    yield p + "ssm_conv1d.weight", [(n.conv_channels, n.conv_kernel)], True
    for name in ("ssm_dt.bias", "ssm_a"):
        yield p + name, _vector(hv), True
    yield p + "ssm_norm.weight", _vector(n.v_dim), True


def _vector(n: int) -> list[tuple[int, ...]]:
    return [(n,), (1, n)]


SPEC = ArchSpec(name="qwen35moe", rope="neox", norm_topk=True, shared_gate=True, ffn_norm="post_attention_norm",
                attention=build_attention, attention_shapes=attention_shapes)
