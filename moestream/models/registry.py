"""GGUF architecture name -> ArchSpec. Adding an architecture = one file with its SPEC + one line here."""

from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from . import deepseek2, glm4moe, gpt_oss, mixtral, olmoe, qwen2moe, qwen3moe, qwen3next, qwen35moe
from .args import ModelArgs
from .decoder import ArchSpec

ARCHITECTURES: dict[str, ArchSpec] = {m.SPEC.name: m.SPEC for m in (mixtral, qwen2moe, qwen3moe, olmoe, glm4moe, deepseek2,
                                                                  gpt_oss, qwen35moe, qwen3next)}


def spec_for(args: ModelArgs) -> ArchSpec:
    spec = ARCHITECTURES.get(args.arch)
    if spec is None:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitectureError(f"architecture '{args.arch}' is not supported (supported: {supported})")
    if spec.requires_experts and not args.n_experts:
        raise UnsupportedArchitectureError(f"architecture '{args.arch}' file has no experts ({args.arch}.expert_count)")
    return spec
