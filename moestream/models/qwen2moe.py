"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): GGUF architecture `qwen2moe`.

Q/K/V carry biases; NEOX RoPE; top-k weights are not renormalised; every layer adds a shared expert scaled per
token by sigmoid(x . ffn_gate_inp_shexp)."""

from .decoder import ArchSpec

SPEC = ArchSpec(name="qwen2moe", rope="neox", norm_topk=False, shared_gate=True)
