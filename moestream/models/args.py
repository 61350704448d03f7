"""Model hyper-parameters read from GGUF metadata (`{arch}.*` keys), unknown keys ignored.

Every value is type- and range-checked here, before anything is allocated from it: a file whose structure parses
but whose numbers are impossible (a head count of 0, an epsilon of NaN, a context of 2^62, a string where a count
belongs) gets a GGUFFormatError naming the key, never a ZeroDivisionError, a huge allocation or silent garbage.
The bounds are generous (far beyond any released model) and only exclude what cannot work."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import GGUFFormatError

MAX_LAYERS = 1 << 12
MAX_WIDTH = 1 << 20  # embedding / FFN width / head dim
MAX_HEADS = 1 << 12
MAX_EXPERTS = 1 << 16
MAX_CONTEXT = 1 << 24


@dataclass(frozen=True)
class RopeScaling:
    """rope.scaling.* : how positions beyond the trained context are handled (layers/rope.py computes it)."""

    kind: str = "none"  # "none", "linear" or "yarn"
    factor: float = 1.0
    original_context: int = 0  # yarn: the context the model was pretrained with
    beta_fast: float = 32.0  # yarn: the ramp between extrapolated and interpolated frequencies
    beta_slow: float = 1.0
    log_multiplier: float = 0.0  # yarn (DeepSeek): 0.1 x mscale_all_dim; attention scores scale by its mscale^2
    attn_factor: float | None = None  # yarn: cos/sin multiplier; None: derived from the factor


@dataclass(frozen=True)
class LinearAttention:
    """ssm.* : the Gated DeltaNet layers of a hybrid model (qwen35moe, qwen3next), and which layers they are."""

    conv_kernel: int  # ssm.conv_kernel: the causal depthwise convolution's width over q, k, v
    k_heads: int  # ssm.group_count: key (and query) heads
    v_heads: int  # ssm.time_step_rank: value heads (a multiple of k_heads), each with its own decay and beta
    k_dim: int  # ssm.state_size: a key head's width
    v_dim: int  # ssm.inner_size / v_heads: a value head's width
    layers: tuple[bool, ...]  # per layer: True = linear attention, False = full attention

    @property
    def conv_channels(self) -> int:
        return 2 * self.k_heads * self.k_dim + self.v_heads * self.v_dim


@dataclass(frozen=True)
class ModelArgs:
    arch: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_dim: int
    rope_base: float
    rms_eps: float
    context_length: int
    n_experts: int  # 0 for a dense model
    n_experts_used: int
    ff_dense: int  # feed_forward_length (dense FFN, or the expert width in Mixtral-style files)
    ff_expert: int  # width of one routed expert
    ff_shared: int  # width of the shared expert (0 if none)
    norm_topk: bool | None  # None: use the architecture's rule
    # DeepSeek-V3 / GLM-4.5-style routing and layer plan (defaults: the plain softmax MoE of every layer)
    n_dense_leading: int = 0  # leading_dense_block_count: the first layers have a dense FFN, not experts
    n_nextn: int = 0  # nextn_predict_layers: trailing MTP blocks in the file (block_count counts them); not run
    gating: str = "softmax"  # expert_gating_func: how router logits become scores, "softmax" or "sigmoid"
    weights_scale: float = 1.0  # expert_weights_scale: the routed experts' weights are multiplied by this
    n_groups: int = 1  # expert_group_count: experts split into groups for group-limited routing
    n_groups_used: int = 1  # expert_group_used_count: groups a token's experts may come from
    # multi-head latent attention (deepseek2; 0 elsewhere). The file's key_length/value_length then describe the
    # compressed cache (kv_lora_rank + rope dims, kv_lora_rank) and head_count_kv is 1.
    kv_lora_rank: int = 0  # attention.kv_lora_rank: width of the cached latent
    q_lora_rank: int = 0  # attention.q_lora_rank: 0 when the query has no low-rank step (attn_q)
    nope_dim: int = 0  # attention.key_length_mla - rope dims: the non-rotated part of a query/key head
    v_head_dim: int = 0  # attention.value_length_mla
    rope_scaling: RopeScaling = RopeScaling()
    # sliding-window attention (gpt-oss): attention.sliding_window keys visible to a query (itself included) in
    # the layers `swa_layers` marks; 0 = every layer sees the whole context
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()  # per layer, from attention.sliding_window_pattern; () = the architecture's rule
    linear: LinearAttention | None = None  # hybrid models: their linear-attention layers (None: every layer attends)

    def is_linear_layer(self, layer: int) -> bool:
        return self.linear is not None and self.linear.layers[layer]

    def is_moe_layer(self, layer: int) -> bool:
        return self.n_experts > 0 and layer >= self.n_dense_leading

    @property
    def moe_layers(self) -> tuple[int, ...]:
        """The layers with routed experts, ascending."""
        return tuple(i for i in range(self.n_layers) if self.is_moe_layer(i))

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any]) -> "ModelArgs":
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise GGUFFormatError("metadata key 'general.architecture' is missing or not a string")
        m = _Meta(metadata, arch)
        d_model = m.int("embedding_length", 1, MAX_WIDTH)
        n_heads = m.int("attention.head_count", 1, MAX_HEADS)
        head_dim = m.int("attention.key_length", 1, MAX_WIDTH, default=d_model // n_heads or None)
        n_experts = m.int("expert_count", 0, MAX_EXPERTS, default=0)
        ff_dense = m.int("feed_forward_length", 0, MAX_WIDTH, default=0)
        n_blocks = m.int("block_count", 1, MAX_LAYERS)
        n_nextn = m.int("nextn_predict_layers", 0, n_blocks - 1, default=0)
        ff_expert = m.int("expert_feed_forward_length", 0, MAX_WIDTH, default=ff_dense)
        n_groups = m.int("expert_group_count", 1, max(n_experts, 1), default=1)
        kv_rank = m.int("attention.kv_lora_rank", 0, MAX_WIDTH, default=0)
        rope_dim = m.int("rope.dimension_count", 2, head_dim, default=head_dim)
        n_kv_heads = m.int("attention.head_count_kv", 1, n_heads, default=n_heads)
        latent = _latent(m, kv_rank, rope_dim, head_dim, n_kv_heads) if kv_rank else dict(nope_dim=0, v_head_dim=0)
        args = cls(
            arch=arch, n_layers=n_blocks - n_nextn, d_model=d_model, n_heads=n_heads,
            n_kv_heads=latent.pop("n_kv_heads", n_kv_heads), head_dim=latent.pop("head_dim", head_dim),
            rope_dim=rope_dim,
            rope_base=m.positive_float("rope.freq_base", default=10000.0),
            rms_eps=m.positive_float("attention.layer_norm_rms_epsilon", default=1e-5, below=1.0),
            context_length=m.int("context_length", 1, MAX_CONTEXT, default=4096),
            n_experts=n_experts,
            n_experts_used=m.int("expert_used_count", 1 if n_experts else 0, n_experts, default=0),
            ff_dense=ff_dense, ff_expert=ff_expert, ff_shared=_shared_width(m, ff_expert),
            norm_topk=m.bool("expert_weights_norm"),
            n_dense_leading=m.int("leading_dense_block_count", 0, n_blocks - n_nextn, default=0), n_nextn=n_nextn,
            gating=_gating(m), weights_scale=m.positive_float("expert_weights_scale", default=1.0, below=1e6),
            n_groups=n_groups, n_groups_used=m.int("expert_group_used_count", 1, n_groups, default=n_groups),
            kv_lora_rank=kv_rank, q_lora_rank=m.int("attention.q_lora_rank", 0, MAX_WIDTH, default=0), **latent,
            rope_scaling=_rope_scaling(m), sliding_window=m.int("attention.sliding_window", 0, MAX_CONTEXT, default=0),
            swa_layers=_swa_layers(m, n_blocks - n_nextn), linear=_linear_attention(m, n_blocks - n_nextn),
        )
        _check_relations(args, m)
        return args


ROPE_SCALINGS = ("none", "linear", "yarn")


def _rope_scaling(m: "_Meta") -> RopeScaling:
    kind = m.raw("rope.scaling.type", "none")
    if not isinstance(kind, str) or kind not in ROPE_SCALINGS:
        raise m.error("rope.scaling.type", f"is {_show(kind)}, which moestream does not support (supported: "
                      f"{', '.join(ROPE_SCALINGS)}); running the file without it would give wrong output")
    if kind == "none":
        return RopeScaling()
    factor = m.positive_float("rope.scaling.factor", default=1.0, below=1e6)
    if kind == "linear":
        return RopeScaling("linear", factor)
    attn = m.raw("rope.scaling.yarn_attn_factor", None)
    return RopeScaling(
        "yarn", factor, original_context=m.int("rope.scaling.original_context_length", 1, MAX_CONTEXT),
        beta_fast=m.positive_float("rope.scaling.yarn_beta_fast", default=32.0, below=1e6),
        beta_slow=m.positive_float("rope.scaling.yarn_beta_slow", default=1.0, below=1e6),
        log_multiplier=m.non_negative_float("rope.scaling.yarn_log_multiplier", default=0.0, at_most=10.0),
        attn_factor=None if attn is None else m.positive_float("rope.scaling.yarn_attn_factor", default=1.0,
                                                               below=1e3),
    )


def _latent(m: "_Meta", rank: int, rope_dim: int, key_length: int, n_kv_heads: int) -> dict:
    """MLA's per-head widths, in either convention of the converter, as ModelArgs fields (head_dim and n_kv_heads
    then describe what is cached: latent + rope dims, one "head"):
    - today's: key_length_mla / value_length_mla give the head widths, key_length / value_length the cache's;
    - files from before the absorbed layout (attn_kv_b): key_length and value_length give the head widths."""
    value_length = m.int("attention.value_length", 1, MAX_WIDTH, default=key_length)
    if m.raw("attention.key_length_mla", None) is None:
        if key_length <= rope_dim:
            raise m.error("attention.key_length", f"is {key_length}; it must exceed rope.dimension_count "
                          f"{rope_dim} (a head's key is its non-rotated dims, then the rotated ones)")
        return dict(nope_dim=key_length - rope_dim, v_head_dim=value_length, head_dim=rank + rope_dim, n_kv_heads=1)
    if key_length != rank + rope_dim:
        raise m.error("attention.key_length", f"is {key_length}; with attention.kv_lora_rank {rank} and "
                      f"rope.dimension_count {rope_dim} it must be {rank + rope_dim}")
    if value_length != rank:
        raise m.error("attention.value_length", f"is {value_length}; with multi-head latent attention it must be "
                      f"attention.kv_lora_rank ({rank})")
    if n_kv_heads != 1:
        raise m.error("attention.head_count_kv", f"is {n_kv_heads}; multi-head latent attention caches one")
    return dict(nope_dim=m.int("attention.key_length_mla", rope_dim + 1, MAX_WIDTH) - rope_dim,
                v_head_dim=m.int("attention.value_length_mla", 1, MAX_WIDTH))


def _swa_layers(m: "_Meta", n_layers: int) -> tuple[bool, ...]:
    """Which layers use the sliding window: attention.sliding_window_pattern as a per-layer bool array, or as a
    period n (in every n layers, all but the last slide, as llama.cpp reads it). Absent: () here, and the
    architecture supplies its rule (models/gpt_oss.py)."""
    value = m.raw("attention.sliding_window_pattern", None)
    if value is None:
        return ()
    if isinstance(value, list):
        if len(value) < n_layers or any(type(v) is not bool for v in value):
            raise m.error("attention.sliding_window_pattern", f"must be {n_layers} booleans (one per layer) or a "
                          f"period, got {_show(value)}")
        return tuple(value[:n_layers])
    period = m.int("attention.sliding_window_pattern", 1, MAX_LAYERS)
    return swa_pattern(period, n_layers)


def _linear_attention(m: "_Meta", n_layers: int) -> LinearAttention | None:
    """The Gated DeltaNet layers' widths (ssm.*) and plan: attention.recurrent_layers (one bool per layer) or
    full_attention_interval n (every n-th layer attends, the others are linear; llama.cpp's default 4)."""
    if m.raw("ssm.time_step_rank", None) is None or m.raw("ssm.group_count", None) is None:
        return None
    k_heads = m.int("ssm.group_count", 1, MAX_HEADS)
    v_heads = m.int("ssm.time_step_rank", 1, MAX_HEADS)
    if v_heads % k_heads:
        raise m.error("ssm.time_step_rank", f"{v_heads} value heads are not a multiple of ssm.group_count {k_heads}")
    inner = m.int("ssm.inner_size", 1, MAX_WIDTH)
    if inner % v_heads:
        raise m.error("ssm.inner_size", f"{inner} does not split into ssm.time_step_rank {v_heads} heads")
    plan = m.raw("attention.recurrent_layers", None)
    if plan is not None:
        if not isinstance(plan, list) or len(plan) < n_layers or any(type(v) is not bool for v in plan):
            raise m.error("attention.recurrent_layers", f"must be {n_layers} booleans (one per layer), got {_show(plan)}")
        layers = tuple(plan[:n_layers])
    else:
        every = m.int("full_attention_interval", 1, MAX_LAYERS, default=4)
        layers = tuple((i + 1) % every != 0 for i in range(n_layers))
    return LinearAttention(conv_kernel=m.int("ssm.conv_kernel", 1, 64), k_heads=k_heads, v_heads=v_heads,
                           k_dim=m.int("ssm.state_size", 1, MAX_WIDTH), v_dim=inner // v_heads, layers=layers)


def swa_pattern(period: int, n_layers: int) -> tuple[bool, ...]:
    """In every `period` layers, all but the last use the sliding window (period 1: none does)."""
    return tuple(i % period < period - 1 for i in range(n_layers))


GATING_FUNCS = {1: "softmax", 2: "sigmoid"}  # llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE values


def _gating(m: "_Meta") -> str:
    value = m.int("expert_gating_func", 0, 1 << 16, default=1)
    if value not in GATING_FUNCS:
        known = ", ".join(f"{k} ({v})" for k, v in GATING_FUNCS.items())
        raise m.error("expert_gating_func", f"is {value}, which moestream does not support (supported: {known})")
    return GATING_FUNCS[value]


def _shared_width(m: "_Meta", ff_expert: int) -> int:
    """The shared expert's FFN width: expert_shared_feed_forward_length (Qwen2-MoE), else expert_shared_count
    experts of the routed width side by side (DeepSeek, GLM); 0 without a shared expert."""
    width = m.int("expert_shared_feed_forward_length", 0, MAX_WIDTH, default=0)
    if width:
        return width
    return m.int("expert_shared_count", 0, MAX_EXPERTS, default=0) * ff_expert


def _check_relations(a: ModelArgs, m: "_Meta") -> None:
    """Constraints between values (each already in range on its own)."""
    if a.n_heads % a.n_kv_heads:
        raise m.error("attention.head_count_kv", f"{a.n_kv_heads} does not divide head_count {a.n_heads}")
    if a.rope_dim % 2:
        raise m.error("rope.dimension_count", f"{a.rope_dim} is odd (RoPE rotates pairs)")
    value_length = m.int("attention.value_length", 1, MAX_WIDTH, default=a.head_dim)
    if not a.kv_lora_rank and value_length != a.head_dim:
        raise m.error("attention.value_length", f"{value_length} differs from key_length {a.head_dim}, which "
                      f"architecture '{a.arch}' does not support")
    if a.n_experts % a.n_groups:
        raise m.error("expert_group_count", f"{a.n_groups} does not divide expert_count {a.n_experts}")
    if a.n_groups > 1 and a.n_experts_used > a.n_groups_used * (a.n_experts // a.n_groups):
        raise m.error("expert_group_used_count", f"{a.n_groups_used} groups of {a.n_experts // a.n_groups} cannot "
                      f"hold the {a.n_experts_used} experts a token uses")
    if a.n_experts and a.n_experts_used == 0:
        raise m.error("expert_used_count", "is missing for a file with experts")
    if a.n_experts and a.ff_expert == 0:
        raise m.error("expert_feed_forward_length", "is 0 (and so is feed_forward_length) for a file with experts")
    if a.n_experts and a.n_dense_leading and a.ff_dense == 0:
        raise m.error("feed_forward_length", f"is missing or 0, but the first {a.n_dense_leading} layers are dense "
                      f"(leading_dense_block_count)")
    if not a.n_experts and a.ff_dense == 0:
        raise m.error("feed_forward_length", "is missing or 0 for a dense model")


class _Meta:
    """Typed, range-checked reads of `{arch}.{key}`."""

    _MISSING = object()

    def __init__(self, metadata: dict[str, Any], arch: str):
        self.metadata, self.arch = metadata, arch

    def error(self, key: str, problem: str) -> GGUFFormatError:
        return GGUFFormatError(f"metadata key '{self.arch}.{key}' {problem}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        value = self.metadata.get(f"{self.arch}.{key}", default)
        if value is self._MISSING:
            raise self.error(key, "is missing")
        return value

    def int(self, key: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        value = self.raw(key, default)
        if value is None:
            raise self.error(key, "is missing (and cannot be derived from the other keys)")
        if isinstance(value, list):
            raise self.error(key, f"is a per-layer array, which moestream does not support for this architecture")
        if type(value) is not int:  # bool is an int subclass, and floats would silently truncate
            raise self.error(key, f"must be an integer, got {type(value).__name__} {_show(value)}")
        if not lo <= value <= hi:
            raise self.error(key, f"is {value}, outside the valid range {lo}..{hi}")
        return value

    def positive_float(self, key: str, default: float, below: float = math.inf) -> float:
        value = self.raw(key, default)
        if type(value) not in (int, float):
            raise self.error(key, f"must be a number, got {type(value).__name__} {_show(value)}")
        if not (math.isfinite(value) and 0 < value < below):
            limit = "" if below == math.inf else f" and below {below:g}"
            raise self.error(key, f"is {value!r}; it must be finite, above 0{limit}")
        return float(value)

    def non_negative_float(self, key: str, default: float, at_most: float) -> float:
        value = self.raw(key, default)
        if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value <= at_most):
            raise self.error(key, f"must be a number from 0 to {at_most:g}, got {_show(value)}")
        return float(value)

    def bool(self, key: str) -> bool | None:
        value = self.raw(key, None)
        if value is not None and type(value) is not bool:
            raise self.error(key, f"must be a boolean, got {type(value).__name__} {_show(value)}")
        return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
