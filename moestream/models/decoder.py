"""The decoder stack shared by every architecture: embed -> blocks (attention + FFN/MoE) -> norm -> lm_head.

Architecture files describe what differs (RoPE layout, router rule, Q/K norms, shared expert) in an `ArchSpec`;
this file assembles the layers. Weights arrive as a mapping of GGUF tensor names; routed experts as a source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..errors import GGUFFormatError
from ..formats.weight import QuantWeight
from ..kernels.dispatch import Compute
from ..layers.attention import Attention, AttentionWeights, Segment
from ..layers.attention_step import NativeAttentionStep
from ..layers.experts import ExpertFFNs, ExpertSource
from ..layers.grouped_router import GroupLimitedRouter
from ..layers.linear import QuantLinear
from ..layers.moe import DenseFFN, MoEBlock, Router, SharedExpert
from ..layers.moe_step import NativeMoEStep, new_workspace
from ..layers.norm import RMSNorm
from ..layers.rope import Rope
from .args import ModelArgs


@dataclass(frozen=True)
class ArchSpec:
    name: str  # GGUF general.architecture
    rope: str  # "norm" (adjacent pairs) or "neox" (halves)
    norm_topk: bool  # renormalise the top-k router weights (llama.cpp's rule for this architecture)
    qk_norm: str | None = None  # None, "head" (RMSNorm per head) or "full" (over the whole projection)
    qk_norm_optional: bool = False  # the Q/K norm tensors may be absent (then there is none)
    shared_gate: bool = False  # the shared expert is sigmoid-gated by ffn_gate_inp_shexp (Qwen2-MoE); whether
    # there is a shared expert at all is the file's: a non-zero shared width (models/args.py ff_shared)
    requires_experts: bool = True
    ffn_norm: str = "ffn_norm"  # the pre-FFN norm's tensor name (GLM's converter calls it post_attention_norm)
    # an attention of another kind (DeepSeek's MLA): (weights, "blk.i.", layer, args, rope) -> the attention, and
    # (args, "blk.i.", tensor names) -> its tensors' (name, shapes, required) for models/shapes.py
    attention: Callable | None = None
    attention_shapes: Callable | None = None
    # a MoE block of another kind (gpt-oss's biased, clamped experts): (weights, "blk.i.", layer, args, experts,
    # compute) -> the block, and (args, "blk.i.") -> its tensors beyond the router and expert matrices
    moe: Callable | None = None
    moe_shapes: Callable | None = None
    yarn_truncate: bool = True  # YaRN: round the ramp's ends to whole dims (transformers' `truncate`)
    sliding_window: Callable | None = None  # (args, layer) -> the keys a query sees there, None: all


class Weights:
    """Typed access to resident tensors by GGUF name, with errors that name the missing tensor."""

    def __init__(self, tensors: Mapping[str, QuantWeight], compute: Compute):
        self.tensors, self.compute = tensors, compute

    def linear(self, name: str, bias: str | None = None, prepare: bool = True) -> QuantLinear:
        """A projection; its weight prepared for Compute (packed) unless `prepare` is False (a weight that is also
        read another way, as tied embeddings are). The prepared weight replaces the original in a mapping that
        allows it, so the GGUF-order copy is freed as soon as it is packed rather than at the end of the load."""
        b = self.vector(bias) if bias and bias in self.tensors else None
        w = self[name]
        if prepare:
            w = self.compute.prepare(w)
            if w is not self.tensors[name] and isinstance(self.tensors, dict):
                self.tensors[name] = w
        return QuantLinear(w, b, self.compute)

    def linear_of(self, w: QuantWeight) -> QuantLinear:
        """A projection over a weight built from the file's tensors (not itself a tensor of the file)."""
        return QuantLinear(self.compute.prepare(w), compute=self.compute)

    def row(self, name: str) -> QuantLinear:
        """A [1, D] projection; llama-quantize stores some (ffn_gate_inp_shexp) as 1-D [D], the converter as 2-D."""
        w = self[name]
        if len(w.shape) == 1:
            w = QuantWeight(w.raw.reshape(1, -1), w.qtype, (1, w.shape[0]))
        return QuantLinear(w, compute=self.compute)

    def vector(self, name: str) -> torch.Tensor:
        return self[name].dense()

    def norm(self, name: str, eps: float) -> RMSNorm:
        return RMSNorm(self.vector(name), eps)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> QuantWeight:
        if name not in self.tensors:
            raise GGUFFormatError(f"tensor {name} is missing from the file")
        return self.tensors[name]


class Block:
    """One decoder layer as two residual steps, each replaceable as a whole by a native version (norm, mixing and
    residual add in one call): `attn_step(x, segments)` and `ffn_step(x)`, both [T, D] -> [T, D]."""

    def __init__(self, attn_norm: RMSNorm, attn: Attention, ffn_norm: RMSNorm, ffn: Callable,
                 native_attn: NativeAttentionStep | None = None, native_ffn: NativeMoEStep | None = None):
        self.attn_norm, self.attn, self.ffn_norm, self.ffn = attn_norm, attn, ffn_norm, ffn
        self.native_attn = native_attn  # attn_step in one native call, for steps of short segments
        self.native_ffn = native_ffn  # ffn_step of a MoE layer in 1 + (expert batches) native calls
        self.lookahead: Callable[[torch.Tensor], None] | None = None  # set by the engine to prefetch layer+1

    def __call__(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        x = self.attn_step(x, segments)
        if self.lookahead is not None:
            self.lookahead(x)  # x: [T, D] residual stream; starts reads for the next layer before our experts run
        return self.ffn_step(x)

    def attn_step(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        if self.native_attn is not None and self.native_attn.accepts(segments):
            return self.native_attn(x, segments)
        return x + self.attn(self.attn_norm(x), segments)

    def ffn_step(self, x: torch.Tensor) -> torch.Tensor:
        if self.native_ffn is not None and self.native_ffn.enabled():
            return self.native_ffn(x)
        return x + self.ffn(self.ffn_norm(x))


class DecoderModel:
    def __init__(self, args: ModelArgs, spec: ArchSpec, tensors: Mapping[str, QuantWeight],
                 experts: ExpertSource | None, compute: Compute | None = None):
        self.args, self.spec, self.compute = args, spec, compute or Compute()
        w = Weights(tensors, self.compute)
        self.embedding = w["token_embd.weight"]  # [V, D]
        rope = Rope(args.rope_dim, args.rope_base, spec.rope, args.rope_scaling, truncate=spec.yarn_truncate)
        self._moe_workspace = new_workspace()  # buffers shared by every layer's native MoE step
        self.blocks = [self._block(w, i, rope, experts) for i in range(args.n_layers)]
        self.norm = w.norm("output_norm.weight", args.rms_eps)
        # tied embeddings: files without output.weight reuse token_embd
        tied = "output.weight" not in w
        self.lm_head = w.linear("token_embd.weight" if tied else "output.weight", prepare=not tied)

    @property
    def kv_dims(self) -> tuple[int, int, int]:
        """(heads, key width, value width) of a sequence's KV cache per layer and token."""
        a = self.args
        if a.kv_lora_rank:  # MLA caches the latent and the positional key (layers/mla.py)
            return 1, a.kv_lora_rank, a.rope_dim
        return a.n_kv_heads, a.head_dim, a.head_dim

    @property
    def vocab_size(self) -> int:
        return self.embedding.shape[0]

    def forward(self, tokens: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        """tokens: [T] int64 of all segments concatenated -> hidden states [T, D] after the final norm."""
        x = self.embedding.rows(tokens)
        for block in self.blocks:
            x = block(x, segments)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)  # [T, V]

    def _block(self, w: Weights, i: int, rope: Rope, experts: ExpertSource | None) -> Block:
        p, a = f"blk.{i}.", self.args
        if self.spec.attention is not None:
            attn = self.spec.attention(w, p, i, a, rope)
        else:
            attn = Attention(i, self._attention_weights(w, p), a.n_heads, a.n_kv_heads, a.head_dim, rope)
        ffn = self._moe(w, p, i, experts) if a.is_moe_layer(i) else self._dense_ffn(w, p)
        attn_norm = w.norm(p + "attn_norm.weight", a.rms_eps)
        native_attn = NativeAttentionStep.build(attn_norm, attn, self.compute)
        ffn_norm = w.norm(p + self.spec.ffn_norm + ".weight", a.rms_eps)
        native_ffn = NativeMoEStep.build(ffn_norm, ffn, self.compute, self._moe_workspace) if a.is_moe_layer(i) \
            else None
        return Block(attn_norm, attn, ffn_norm, ffn, native_attn, native_ffn)

    def _attention_weights(self, w: Weights, p: str) -> AttentionWeights:
        aw = AttentionWeights(
            q=w.linear(p + "attn_q.weight", p + "attn_q.bias"), k=w.linear(p + "attn_k.weight", p + "attn_k.bias"),
            v=w.linear(p + "attn_v.weight", p + "attn_v.bias"), o=w.linear(p + "attn_output.weight"),
        )
        if self.spec.qk_norm and (p + "attn_q_norm.weight" in w or not self.spec.qk_norm_optional):
            aw.q_norm = w.norm(p + "attn_q_norm.weight", self.args.rms_eps)
            aw.k_norm = w.norm(p + "attn_k_norm.weight", self.args.rms_eps)
            aw.qk_norm_per_head = self.spec.qk_norm == "head"
        return aw

    def _moe(self, w: Weights, p: str, i: int, experts: ExpertSource | None) -> MoEBlock:
        assert experts is not None, "a model with experts needs an expert source"
        if self.spec.moe is not None:
            return self.spec.moe(w, p, i, self.args, experts, self.compute)
        shared = None
        if self.args.ff_shared:
            ffn = DenseFFN(w.linear(p + "ffn_gate_shexp.weight"), w.linear(p + "ffn_up_shexp.weight"),
                           w.linear(p + "ffn_down_shexp.weight"))
            shared = SharedExpert(ffn, w.row(p + "ffn_gate_inp_shexp.weight") if self.spec.shared_gate else None)
        return MoEBlock(self._router(w, p), ExpertFFNs(i, experts, self.compute), shared, layer=i)

    def _router(self, w: Weights, p: str):
        """Softmax top-k (Router, which the native MoE step runs) unless the file asks for more: sigmoid scores, a
        selection bias, group-limited routing or a weight scale (GroupLimitedRouter)."""
        a = self.args
        norm_topk = self.spec.norm_topk if a.norm_topk is None else a.norm_topk
        gate_inp, bias_name = w.linear(p + "ffn_gate_inp.weight"), p + "exp_probs_b.bias"
        bias = w.vector(bias_name) if bias_name in w else None
        if a.gating == "softmax" and bias is None and a.n_groups == 1 and a.weights_scale == 1.0:
            return Router(gate_inp, a.n_experts_used, norm_topk)
        return GroupLimitedRouter(gate_inp, a.n_experts_used, scoring=a.gating, bias=bias, normalize=norm_topk,
                                  scale=a.weights_scale, n_groups=a.n_groups, groups_used=a.n_groups_used)

    def _dense_ffn(self, w: Weights, p: str) -> DenseFFN:
        return DenseFFN(w.linear(p + "ffn_gate.weight"), w.linear(p + "ffn_up.weight"), w.linear(p + "ffn_down.weight"))
