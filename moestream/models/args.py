"""Model hyper-parameters read from GGUF metadata (`{arch}.*` keys), unknown keys ignored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GGUFFormatError


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

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any]) -> "ModelArgs":
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFFormatError("metadata key 'general.architecture' is missing")
        get = _getter(metadata, arch)
        d_model, n_heads = get("embedding_length"), get("attention.head_count")
        head_dim = get("attention.key_length", d_model // n_heads)
        ff_dense = get("feed_forward_length", 0)
        return cls(
            arch=arch, n_layers=get("block_count"), d_model=d_model, n_heads=n_heads,
            n_kv_heads=get("attention.head_count_kv", n_heads), head_dim=head_dim,
            rope_dim=get("rope.dimension_count", head_dim), rope_base=float(get("rope.freq_base", 10000.0)),
            rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            context_length=get("context_length", 4096),
            n_experts=get("expert_count", 0), n_experts_used=get("expert_used_count", 0),
            ff_dense=ff_dense, ff_expert=get("expert_feed_forward_length", ff_dense),
            ff_shared=get("expert_shared_feed_forward_length", 0),
            norm_topk=get("expert_weights_norm", None),
        )


def _getter(metadata: dict[str, Any], arch: str):
    missing = object()

    def get(key: str, default: Any = missing) -> Any:
        value = metadata.get(f"{arch}.{key}", default)
        if value is missing:
            raise GGUFFormatError(f"metadata key '{arch}.{key}' is missing")
        return value

    return get
