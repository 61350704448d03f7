"""The facts sizing (sizing.py) needs of a model, read from a GGUF's header (no weights read) or computed from a
synth preset's tensor table (no file written: deploy/ is sized for a preset's shapes)."""

from __future__ import annotations

from pathlib import Path

from ..cache.layout import SlotLayout
from ..store.reader import align_up
from ..synth import get_preset, qtype_of
from ..synth.plan import tensor_plan
from .loader import inspect_file
from .sizing import KV_BYTES_PER_VALUE, ModelSize, kv_bytes_per_token

EXPERT_PARTS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")
PAGE = 4096


def model_size(path: str | Path) -> ModelSize:
    info = inspect_file(path)
    a = info.args
    if info.experts is None:
        raise ValueError(f"{path} has no routed experts")
    slot = SlotLayout(info.experts).slot_size
    return ModelSize(info.resident_bytes, info.experts.n_total, slot, a.n_experts_used, kv_bytes_per_token(a))


def preset_size(name: str, qtype: str = "q4_0") -> ModelSize:
    """The ModelSize of `moestream synth --preset NAME --qtype QTYPE` (slots as the cache lays them out: each of
    gate, up and down page-aligned, with a page of slack for the aligned reads around it)."""
    p = get_preset(name)
    plan = tensor_plan(p, qtype_of(qtype))
    experts = [t for t in plan if any(part in t.name for part in EXPERT_PARTS) and t.name.endswith(".weight")]
    resident = sum(t.nbytes for t in plan) - sum(t.nbytes for t in experts)
    per_expert = [t.nbytes // p.n_experts for t in experts[:3]]  # one MoE layer's gate, up, down
    slot = sum(align_up(n) + PAGE for n in per_expert)
    n_moe = p.n_layers - p.routing.n_dense_leading
    heads, k_dim, v_dim = (1, p.latent.kv_lora_rank, p.latent.rope_dim) if p.latent else \
        (p.n_kv_heads, p.head_dim, p.head_dim)
    kv = p.n_layers * heads * (k_dim + v_dim) * KV_BYTES_PER_VALUE
    return ModelSize(resident, n_moe * p.n_experts, slot, p.n_experts_used, kv)
