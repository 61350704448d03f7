"""Mixtral (and plain Llama): GGUF architecture `llama`. Experts are present when `llama.expert_count` > 0.

RoPE on adjacent pairs: llama.cpp's converter permutes the Q/K rows of HF checkpoints so that this layout
reproduces HF's rotate-half. The router renormalises its top-k weights (Mixtral's rule)."""

from .decoder import ArchSpec

SPEC = ArchSpec(name="llama", rope="norm", norm_topk=True, requires_experts=False)
