"""OLMoE (OLMoE-1B-7B): GGUF architecture `olmoe`.

RMSNorm over the whole Q and K projections (size n_heads*head_dim, not per head) before RoPE; NEOX RoPE; top-k
weights are not renormalised."""

from .decoder import ArchSpec

SPEC = ArchSpec(name="olmoe", rope="neox", norm_topk=False, qk_norm="full")
