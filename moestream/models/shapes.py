"""The tensor shapes an architecture's hyper-parameters imply, checked against the file before any weight is read.

A file whose tensor table parses can still disagree with its own metadata (an attention projection one head too
narrow, an expert tensor for 7 experts where `expert_count` says 8, an embedding for fewer tokens than the
vocabulary). Without this check those surface deep in a forward pass as a shape error from torch, an index
past the end of a buffer in C, or silently wrong output. Shapes are row-major (torch order, GGUF `ne` reversed);
a 1-D vector may also be stored as [1, n]. Tensors the model does not use (e.g. `rope_freqs`) are ignored."""

from __future__ import annotations

from typing import Container, Iterator

from ..errors import GGUFFormatError
from .args import ModelArgs

Shape = tuple[int, ...]


def check_shapes(tensors: dict, args: ModelArgs, spec, expert_layout: str | None, vocab_size: int | None) -> None:
    """`tensors`: name -> TensorInfo. Raises GGUFFormatError naming the first tensor that is missing or wrong."""
    for name, shapes, required in expected(args, spec, expert_layout, vocab_size or _rows(tensors), tensors):
        info = tensors.get(name)
        if info is None:
            if required:
                raise GGUFFormatError(f"tensor {name} is missing from the file")
            continue
        if tuple(info.shape) not in shapes:
            want = " or ".join(str(list(s)) for s in shapes)
            raise GGUFFormatError(
                f"tensor {name} has shape {list(info.shape)}, but the file's hyper-parameters ({args.arch}.*) "
                f"imply {want}"
            )


def _rows(tensors: dict) -> int:
    embd = tensors.get("token_embd.weight")
    return embd.shape[0] if embd is not None else 0


def expected(a: ModelArgs, spec, expert_layout: str | None, vocab: int,
             present: Container[str] = ()) -> Iterator[tuple[str, list[Shape], bool]]:
    """(tensor name, accepted shapes, required) for every tensor the model reads; `present`: the file's tensor
    names, for parts an architecture may have or not (then all of a part's tensors or none)."""
    D = a.d_model
    yield "token_embd.weight", [(vocab, D)], True
    yield "output_norm.weight", _vector(D), True
    yield "output.weight", [(vocab, D)], False  # absent: tied to token_embd
    for i in range(a.n_layers):
        yield from _attention(a, spec, f"blk.{i}.", present)
        if spec.attention_shapes is not None:
            yield from spec.attention_shapes(a, f"blk.{i}.", present)
        if a.is_moe_layer(i):
            yield from _moe(a, spec, f"blk.{i}.", expert_layout)
            if spec.moe_shapes is not None:
                yield from spec.moe_shapes(a, f"blk.{i}.")
        else:
            yield from _ffn(f"blk.{i}.ffn_{{}}.weight", a.ff_dense, D)


def _attention(a: ModelArgs, spec, p: str, present: Container[str]) -> Iterator[tuple[str, list[Shape], bool]]:
    D, q, kv = a.d_model, a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
    yield p + "attn_norm.weight", _vector(D), True
    yield p + spec.ffn_norm + ".weight", _vector(D), True
    if spec.attention_shapes is not None:
        return  # the architecture's own attention (see expected())
    for part, width in (("q", q), ("k", kv), ("v", kv)):
        yield p + f"attn_{part}.weight", [(width, D)], True
        yield p + f"attn_{part}.bias", _vector(width), False
    yield p + "attn_output.weight", [(D, q)], True
    if spec.qk_norm:
        per_head = spec.qk_norm == "head"
        required = not spec.qk_norm_optional or p + "attn_q_norm.weight" in present
        yield p + "attn_q_norm.weight", _vector(a.head_dim if per_head else q), required
        yield p + "attn_k_norm.weight", _vector(a.head_dim if per_head else kv), required


def _moe(a: ModelArgs, spec, p: str, layout: str | None) -> Iterator[tuple[str, list[Shape], bool]]:
    D, E, F = a.d_model, a.n_experts, a.ff_expert
    yield p + "ffn_gate_inp.weight", [(E, D)], True
    if layout == "merged":
        yield from _ffn(p + "ffn_{}_exps.weight", F, D, lead=(E,))
    else:
        for e in range(E):
            yield from _ffn(p + "ffn_{}." + f"{e}.weight", F, D)
    yield p + "exp_probs_b.bias", _vector(E), False
    if a.ff_shared or spec.shared_gate:  # a gated architecture without a width: the shapes say what is wrong
        yield from _ffn(p + "ffn_{}_shexp.weight", a.ff_shared, D)
    if spec.shared_gate:
        yield p + "ffn_gate_inp_shexp.weight", _vector(D), True


def _ffn(pattern: str, F: int, D: int, lead: Shape = ()) -> Iterator[tuple[str, list[Shape], bool]]:
    yield pattern.format("gate"), [lead + (F, D)], True
    yield pattern.format("up"), [lead + (F, D)], True
    yield pattern.format("down"), [lead + (D, F)], True


def _vector(n: int) -> list[Shape]:
    return [(n,), (1, n)]
