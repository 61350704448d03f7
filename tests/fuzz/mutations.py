"""A catalogue of hostile edits of a real GGUF: every class of impossible value the parser, the hyper-parameter
checks, the shape checks and the tokenizer must turn into a MoestreamError. `catalogue(header, seed)` gives
(name, edit) pairs; each edit mutates a clone of the header in place. Targeted edits come first (every
hyper-parameter x every bad value, every dimension class, every offset class, ...), then seeded random ones."""

from __future__ import annotations

import random
import struct
from typing import Callable, Iterator

from .gguf_model import KV, V, Header, nested_arrays

Edit = Callable[[Header], None]

BAD_INTS: list[tuple[str, int, object]] = [  # (label, value type, value)
    ("0", V.UINT32, 0), ("-1", V.INT32, -1), ("huge", V.UINT64, (1 << 63) + 5), ("2^31", V.UINT32, 1 << 31),
    ("nan", V.FLOAT32, float("nan")), ("inf", V.FLOAT32, float("inf")), ("neg-float", V.FLOAT32, -2.5),
    ("string", V.STRING, "four"), ("bool", V.BOOL, True), ("big-float", V.FLOAT64, 1e300),
]
BAD_DIMS: list[tuple[str, Callable[[int], int]]] = [
    ("0", lambda d: 0), ("neg", lambda d: -1), ("2^62", lambda d: 1 << 62), ("2^63", lambda d: 1 << 63),
    ("plus1", lambda d: d + 1), ("double", lambda d: d * 2)]


def catalogue(h: Header, seed: int, n_random: int, scope: str = "all") -> list[tuple[str, Edit]]:
    """scope "all": every class; "tensors": the tensor table and header structure only (for a second base file
    whose metadata the first already covers); "metadata": the hyper-parameters only (for files of other
    architectures, whose keys the default model has not; "metadata:KEY,KEY": only those)."""
    if scope.startswith("metadata:"):  # only these keys (suffixes after "{arch}.", comma-separated)
        return list(_metadata_cases(h, set(scope.split(":", 1)[1].split(","))))
    cases = [*_tensor_cases(h), *_structure_cases(h)]
    if scope == "all":
        cases = [*_metadata_cases(h), *cases, *_tokenizer_cases(h)]
    rng = random.Random(seed)
    cases += [_random_case(h, rng, i) for i in range(n_random)]
    return cases


# ---- hyper-parameters and general.* --------------------------------------------------------------------------

def _metadata_cases(h: Header, only: set[str] | None = None) -> Iterator[tuple[str, Edit]]:
    arch = h.kv("general.architecture").value
    keys = [kv.key for kv in h.kvs if kv.key.startswith(f"{arch}.")]
    keys += [f"{arch}.attention.key_length", f"{arch}.expert_weights_norm", f"{arch}.attention.value_length"]
    if only is not None:
        keys = [k for k in dict.fromkeys(keys) if k[len(arch) + 1:] in only]
        yield from _key_cases(keys)
        return
    yield from _key_cases(keys)
    yield from _relation_cases(arch)


def _key_cases(keys: list[str]) -> Iterator[tuple[str, Edit]]:
    for key in keys:
        for label, vtype, value in BAD_INTS:
            yield f"{key}={label}", _set(key, vtype, value)
        yield f"{key}=array", _set(key, V.ARRAY, [1, 2, 3], V.UINT32)
        yield f"{key}=removed", _remove(key)


def _relation_cases(arch: str) -> Iterator[tuple[str, Edit]]:
    yield "head_count_kv=5 (does not divide)", _set(f"{arch}.attention.head_count_kv", V.UINT32, 5)
    yield "expert_used_count>expert_count", _set(f"{arch}.expert_used_count", V.UINT32, 9)
    yield "rope dims odd", _set(f"{arch}.rope.dimension_count", V.UINT32, 31)
    for label, vtype, value in [("0", V.UINT32, 0), ("3", V.UINT32, 3), ("2^40", V.UINT64, 1 << 40),
                                ("string", V.STRING, "x"), ("nan", V.FLOAT32, float("nan"))]:
        yield f"general.alignment={label}", _set("general.alignment", vtype, value)
    for label, vtype, value in [("int", V.UINT32, 7), ("empty", V.STRING, ""), ("unknown", V.STRING, "frob")]:
        yield f"general.architecture={label}", _set("general.architecture", vtype, value)


def _set(key: str, vtype: int, value, sub: int | None = None) -> Edit:
    def edit(h: Header) -> None:
        kv = next((kv for kv in h.kvs if kv.key == key), None)
        if kv is None:
            h.kvs.append(KV(key, vtype, value, sub))
        else:
            kv.vtype, kv.value, kv.sub, kv.raw = vtype, value, sub, None
    return edit


def _remove(key: str) -> Edit:
    def edit(h: Header) -> None:
        h.kvs = [kv for kv in h.kvs if kv.key != key]
    return edit


# ---- tensor table --------------------------------------------------------------------------------------------

def _tensor_cases(h: Header) -> Iterator[tuple[str, Edit]]:
    names = _sample_tensors(h)
    for name in names:
        n = len(h.tensor(name).ne)
        for axis in range(n):
            for label, value in BAD_DIMS:
                yield f"{name} dim{axis}={label}", _dim(name, axis, value)
        yield f"{name} n_dims=0", _n_dims(name, 0)
        yield f"{name} n_dims=9", _n_dims(name, 9)
        yield f"{name} n_dims={n + 1} (extra dim 1)", _extra_dim(name)
        yield f"{name} type=99", _tensor_field(name, "type_id", 99)
        yield f"{name} type=IQ2_XXS", _tensor_field(name, "type_id", 16)
        yield f"{name} type=Q4_K", _tensor_field(name, "type_id", 12)
        yield f"{name} offset+1", _offset(name, lambda t, h: t.rel_offset + 1)
        yield f"{name} offset past end", _offset(name, lambda t, h: len(h.data) + 4096)
        yield f"{name} offset 2^63", _offset(name, lambda t, h: 1 << 63)
        yield f"{name} offset overlaps", _offset(name, lambda t, h: _other(h, t.name).rel_offset)
        yield f"{name} duplicated", _duplicate_tensor(name)
        yield f"{name} removed", _remove_tensor(name)
    yield "shapes swapped", _swap_shapes(names[0], names[-1])


def _sample_tensors(h: Header) -> list[str]:
    """One tensor of each role: embedding, norm, attention, router, each expert kind, output."""
    want = ("token_embd", "output_norm", "output.weight", "attn_norm", "attn_q.", "attn_k.", "attn_output",
            "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate.3", "ffn_down.7", "ffn_norm")
    names = []
    for role in want:
        hit = next((t.name for t in h.tensors if role in t.name and t.name.startswith(("blk.1.", "token", "output"))), None)
        if hit and hit not in names:
            names.append(hit)
    return names


def _dim(name: str, axis: int, value: Callable[[int], int]) -> Edit:
    def edit(h: Header) -> None:
        ne = h.tensor(name).ne
        ne[axis] = value(ne[axis])
    return edit


def _n_dims(name: str, n: int) -> Edit:
    def edit(h: Header) -> None:
        t = h.tensor(name)
        t.ne = (t.ne + [1] * n)[:n]
    return edit


def _extra_dim(name: str) -> Edit:
    def edit(h: Header) -> None:
        h.tensor(name).ne.append(1)
    return edit


def _tensor_field(name: str, attr: str, value) -> Edit:
    def edit(h: Header) -> None:
        setattr(h.tensor(name), attr, value)
    return edit


def _offset(name: str, compute) -> Edit:
    def edit(h: Header) -> None:
        t = h.tensor(name)
        t.rel_offset = compute(t, h)
    return edit


def _other(h: Header, name: str):
    return next(t for t in h.tensors if t.name != name)


def _duplicate_tensor(name: str) -> Edit:
    def edit(h: Header) -> None:
        t = h.tensor(name)
        h.tensors.append(type(t)(t.name, list(t.ne), t.type_id, t.rel_offset))
    return edit


def _remove_tensor(name: str) -> Edit:
    def edit(h: Header) -> None:
        h.tensors = [t for t in h.tensors if t.name != name]
    return edit


def _swap_shapes(a: str, b: str) -> Edit:
    def edit(h: Header) -> None:
        ta, tb = h.tensor(a), h.tensor(b)
        ta.ne, tb.ne = tb.ne, ta.ne
    return edit


# ---- tokenizer metadata --------------------------------------------------------------------------------------

def _tokenizer_cases(h: Header) -> Iterator[tuple[str, Edit]]:
    tokens = h.kv("tokenizer.ggml.tokens").value
    n = len(tokens)
    yield "tokens as ints", _set("tokenizer.ggml.tokens", V.ARRAY, list(range(n)), V.INT32)
    yield "tokens as floats", _set("tokenizer.ggml.tokens", V.ARRAY, [0.5] * n, V.FLOAT32)
    yield "tokens empty", _set("tokenizer.ggml.tokens", V.ARRAY, [], V.STRING)
    yield "tokens one short", _set("tokenizer.ggml.tokens", V.ARRAY, tokens[:-1], V.STRING)
    yield "tokens not an array", _set("tokenizer.ggml.tokens", V.STRING, "abc")
    yield "tokens nested 1000 deep", _raw("tokenizer.ggml.tokens", V.ARRAY, nested_arrays(1000))
    yield "token_type as strings", _set("tokenizer.ggml.token_type", V.ARRAY, ["x"] * n, V.STRING)
    yield "token_type as floats", _set("tokenizer.ggml.token_type", V.ARRAY, [1.0] * n, V.FLOAT32)
    yield "token_type short", _set("tokenizer.ggml.token_type", V.ARRAY, [1] * (n // 2), V.INT32)
    yield "token_type huge values", _set("tokenizer.ggml.token_type", V.ARRAY, [1 << 30] * n, V.INT32)
    yield "scores as strings", _set("tokenizer.ggml.scores", V.ARRAY, ["s"] * n, V.STRING)
    yield "scores nan", _set("tokenizer.ggml.scores", V.ARRAY, [float("nan")] * n, V.FLOAT32)
    yield "merges as ints", _set("tokenizer.ggml.merges", V.ARRAY, [1, 2, 3], V.INT32)
    yield "merges garbage", _set("tokenizer.ggml.merges", V.ARRAY, ["", " ", "a", "\udcff \udcfe"], V.STRING)
    yield "merges empty", _set("tokenizer.ggml.merges", V.ARRAY, [], V.STRING)
    yield "model unknown", _set("tokenizer.ggml.model", V.STRING, "frob")
    yield "model int", _set("tokenizer.ggml.model", V.UINT32, 1)
    yield "pre unknown", _set("tokenizer.ggml.pre", V.STRING, "frob")
    yield "pre int", _set("tokenizer.ggml.pre", V.INT32, 3)
    for role in ("bos", "eos", "unknown", "padding"):
        key = f"tokenizer.ggml.{role}_token_id"
        for label, vtype, value in [("huge", V.UINT32, 10**9), ("-1", V.INT32, -1), ("string", V.STRING, "x"),
                                    ("float", V.FLOAT32, 1.5)]:
            yield f"{role} id {label}", _set(key, vtype, value)
    yield "add_bos string", _set("tokenizer.ggml.add_bos_token", V.STRING, "yes")
    yield "chat template int", _set("tokenizer.chat_template", V.UINT32, 5)
    yield "chat template broken", _set("tokenizer.chat_template", V.STRING, "{% for %}{{ x")
    yield "chat template raises", _set("tokenizer.chat_template", V.STRING, "{{ raise_exception('no') }}")
    yield "chat template divides by zero", _set("tokenizer.chat_template", V.STRING, "{{ 1 // 0 }}")


def _raw(key: str, vtype: int, data: bytes) -> Edit:
    def edit(h: Header) -> None:
        kv = next((kv for kv in h.kvs if kv.key == key), None)
        if kv is None:
            h.kvs.append(KV(key, vtype, raw=data))
        else:
            kv.vtype, kv.raw = vtype, data
    return edit


# ---- header structure ----------------------------------------------------------------------------------------

def _structure_cases(h: Header) -> Iterator[tuple[str, Edit]]:
    arch = h.kv("general.architecture").value
    yield "duplicate key (same value)", lambda h: h.kvs.append(h.kv(f"{arch}.block_count"))
    yield "duplicate key (other value)", lambda h: h.kvs.append(KV(f"{arch}.block_count", V.UINT32, 1))
    yield "new key nested 1000 deep", _raw("x.nested", V.ARRAY, nested_arrays(1000))
    yield "new key nested 3 deep", _raw("x.nested", V.ARRAY, nested_arrays(3))
    yield "n_kv huge", lambda h: setattr(h, "n_kv", 1 << 62)
    yield "n_kv +1", lambda h: setattr(h, "n_kv", len(h.kvs) + 1)
    yield "n_tensors huge", lambda h: setattr(h, "n_tensors", 1 << 62)
    yield "n_tensors +1", lambda h: setattr(h, "n_tensors", len(h.tensors) + 1)
    yield "n_tensors -1", lambda h: setattr(h, "n_tensors", len(h.tensors) - 1)
    yield "version 1", lambda h: setattr(h, "version", 1)
    yield "version 4", lambda h: setattr(h, "version", 4)
    yield "string length huge", _raw("x.str", V.STRING, struct.pack("<Q", 1 << 62) + b"abc")
    yield "array count huge", _raw("x.arr", V.ARRAY, struct.pack("<IQ", V.UINT32, 1 << 61))
    yield "string array count huge", _raw("x.arr", V.ARRAY, struct.pack("<IQ", V.STRING, 1 << 61))
    yield "unknown value type", lambda h: h.kvs.append(KV("x.bad", 13, raw=b"\0" * 8))
    yield "unknown array element type", _raw("x.arr", V.ARRAY, struct.pack("<IQ", 77, 2))
    yield "data truncated", lambda h: setattr(h, "data", h.data[: len(h.data) // 3])
    yield "data empty", lambda h: setattr(h, "data", b"")


# ---- seeded random -------------------------------------------------------------------------------------------

def _random_case(h: Header, rng: random.Random, i: int) -> tuple[str, Edit]:
    kind = rng.choice(["dim", "offset", "type", "int-kv", "flip"])
    t = rng.choice(h.tensors)
    if kind == "dim":
        axis, value = rng.randrange(len(t.ne)), rng.choice([0, 1, 2, 3, 7, 31, 33, 1 << 32, (1 << 64) - 1])
        return f"random {i}: {t.name} dim{axis}={value}", _dim(t.name, axis, lambda d: value)
    if kind == "offset":
        delta = rng.choice([-32, 32, 64, -4096, 1 << 20, 7])
        return f"random {i}: {t.name} offset{delta:+d}", _offset(t.name, lambda tt, h: max(0, tt.rel_offset + delta))
    if kind == "type":
        type_id = rng.choice([0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 28, 29, 30, 39, 40, 41])
        return f"random {i}: {t.name} type={type_id}", _tensor_field(t.name, "type_id", type_id)
    if kind == "int-kv":
        kv = rng.choice([kv for kv in h.kvs if kv.vtype in (V.UINT32, V.INT32, V.UINT64, V.FLOAT32)])
        label, vtype, value = rng.choice(BAD_INTS)
        return f"random {i}: {kv.key}={label}", _set(kv.key, vtype, value)
    pos, bit = rng.randrange(24, 4096), rng.randrange(8)
    return f"random {i}: flip header byte {pos} bit {bit}", _flip(pos, bit)


def _flip(pos: int, bit: int) -> Edit:
    """Flip one bit of the serialised header (applied when the file is written)."""
    def edit(h: Header) -> None:
        h.flips.append((pos, bit))
    return edit
