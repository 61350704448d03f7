"""`moestream inspect FILE`: what is in a GGUF, and how much of it stays resident vs streams as experts."""

from __future__ import annotations

import argparse
from collections import defaultdict

from ..engine import ModelInfo, Tokenizer, inspect_file
from ..errors import ConfigError
from .options import model_path
from .units import fmt_bytes, fmt_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="architecture, sizes, quant types, expert and resident bytes of a GGUF")
    p.add_argument("file", metavar="FILE", nargs="?", help="the GGUF (default: the embedded tiny model)")
    p.add_argument("-m", "--model", metavar="FILE", help="the same as FILE, as the other commands take it")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.file and args.model and args.file != args.model:
        raise ConfigError(f"inspect takes one file: got {args.file} and -m {args.model}")
    args.model = args.file or args.model
    for key, value in report(inspect_file(model_path(args))):
        print(f"{key:<18} {value}")
    return 0


def report(info: ModelInfo) -> list[tuple[str, str]]:
    gguf, a, experts = info.gguf, info.args, info.experts
    rows = [
        ("file", f"{gguf.path} ({fmt_bytes(gguf.file_size)})"),
        *_shards(gguf),
        ("name", str(gguf.get("general.name", "-"))),
        ("architecture", f"{a.arch} ({'MoE' if a.n_experts else 'dense'})"),
        ("layers", _layer_plan(a)),
        ("d_model", str(a.d_model)),
        ("attention", _attention(a)),
        *_window(info),
        ("KV cache", f"{fmt_bytes(_kv_bytes_per_token(a))} per token (float32, {_kv_layers(a)})"),
        *_recurrent_state(a),
        ("context", str(a.context_length)),
        ("rope", f"{info.spec.rope}, base {a.rope_base:g}, dims {a.rope_dim}"),
        ("vocabulary", _vocab(gguf)),
        ("parameters", f"{fmt_count(info.n_params)} total, {fmt_count(info.active_params)} active per token"),
    ]
    if experts:
        e_bytes = experts.expert_nbytes(experts.layers[0], 0)
        rows += [
            ("experts", f"{a.n_experts} per layer, top-{a.n_experts_used}, FFN width {a.ff_expert}, layout {experts.layout}"),
            ("routing", _routing(info)),
            ("expert size", f"{fmt_bytes(e_bytes)} each (gate+up+down, layer {experts.layers[0]}), "
                            f"{experts.n_total} in all"),
        ]
        if a.ff_shared:
            gate = "sigmoid-gated" if info.spec.shared_gate else "ungated"
            rows.append(("shared expert", f"FFN width {a.ff_shared}, {gate}"))
    rows += [
        ("expert bytes", fmt_bytes(info.expert_bytes) + " (streamed)"),
        ("resident bytes", fmt_bytes(info.resident_bytes) + " (attention, embeddings, norms, router, output)"),
        ("quant types", _qtypes(gguf)),
        ("chat template", "yes" if gguf.get("tokenizer.chat_template") else "no (ChatML fallback)"),
    ]
    return rows


def _shards(gguf) -> list[tuple[str, str]]:
    shards = getattr(gguf, "shards", None)
    if not shards:
        return []
    names = ", ".join(f"{s.path.name} ({fmt_bytes(s.file_size)}, {len(s.tensors)} tensors)" for s in shards)
    return [("split", f"{len(shards)} shards: {names}")]


def _attention(a) -> str:
    if a.linear is not None:
        n, attends = a.linear, a.n_layers - sum(a.linear.layers)
        return (f"hybrid: {_layers(sum(n.layers), 'Gated DeltaNet')} ({n.k_heads} key / {n.v_heads} value heads of "
                f"{n.k_dim} / {n.v_dim}, convolution {n.conv_kernel}), {_layers(attends, 'gated full-attention')} "
                f"({a.n_heads} query / {a.n_kv_heads} key-value heads, head_dim {a.head_dim})")
    if a.kv_lora_rank:
        q = f"query rank {a.q_lora_rank}" if a.q_lora_rank else "full-rank query"
        return (f"multi-head latent, {a.n_heads} heads ({a.nope_dim} + {a.rope_dim} rotary dims, value "
                f"{a.v_head_dim}), latent {a.kv_lora_rank}, {q}")
    kind = "multi-head" if a.n_kv_heads == a.n_heads else "grouped-query"
    return f"{kind}, {a.n_heads} query / {a.n_kv_heads} key-value heads, head_dim {a.head_dim}"


def _kv_layers(a) -> str:
    if a.linear is None:
        return f"all {a.n_layers} layers"
    return "the " + _layers(a.n_layers - sum(a.linear.layers), "full-attention")


def _window(info: ModelInfo) -> list[tuple[str, str]]:
    """gpt-oss: which layers see only a window of keys, and the sinks beside the attention."""
    a, window = info.args, info.spec.sliding_window
    sliding = [i for i in range(a.n_layers) if window is not None and window(a, i)]
    rows = []
    if sliding:
        layers = "even layers" if sliding == list(range(0, a.n_layers, 2)) else f"layers {_ranges(sliding)}"
        rows.append(("sliding window", f"{a.sliding_window} keys on {layers}, the whole context on the others"))
    if "blk.0.attn_sinks.weight" in info.gguf.tensors:
        rows.append(("attention sinks", "a learned sink logit per head"))
    return rows


def _ranges(layers: list[int]) -> str:
    return ", ".join(str(i) for i in layers) if len(layers) <= 8 else f"{layers[0]}..{layers[-1]} ({len(layers)})"


def _kv_bytes_per_token(a) -> int:
    if a.kv_lora_rank:  # the latent and one positional key (layers/mla.py)
        return 4 * a.n_layers * (a.kv_lora_rank + a.rope_dim)
    attending = a.n_layers - (sum(a.linear.layers) if a.linear is not None else 0)
    return 4 * attending * 2 * a.n_kv_heads * a.head_dim


def _recurrent_state(a) -> list[tuple[str, str]]:
    """Linear-attention layers: a fixed state per sequence (convolution window + one matrix per value head)."""
    if a.linear is None:
        return []
    n = a.linear
    per_layer = 4 * ((n.conv_kernel - 1) * n.conv_channels + n.v_heads * n.k_dim * n.v_dim)
    return [("recurrent state", f"{fmt_bytes(per_layer * sum(n.layers))} per sequence (float32, "
                                f"{_layers(sum(n.layers), 'linear-attention')}), whatever its length")]


def _layers(n: int, kind: str) -> str:
    return f"{n} {kind} layer{'' if n == 1 else 's'}"


def _routing(info: ModelInfo) -> str:
    a = info.args
    norm = info.spec.norm_topk if a.norm_topk is None else a.norm_topk
    parts = [f"{a.gating} scores", "renormalised" if norm else "not renormalised"]
    first = info.experts.layers[0]
    if f"blk.{first}.exp_probs_b.bias" in info.gguf.tensors:
        parts.append("selection bias")
    if f"blk.{first}.ffn_gate_inp.bias" in info.gguf.tensors:
        parts.append("router bias")
    if f"blk.{first}.ffn_gate_exps.bias" in info.gguf.tensors:
        parts.append("per-expert biases")
    if a.n_groups > 1:
        parts.append(f"{a.n_groups_used} of {a.n_groups} expert groups")
    if a.weights_scale != 1.0:
        parts.append(f"weights x {a.weights_scale:g}")
    return ", ".join(parts)


def _layer_plan(a) -> str:
    text = f"{a.n_layers}"
    if a.n_dense_leading:
        text += f" ({a.n_dense_leading} dense, then {a.n_layers - a.n_dense_leading} MoE)"
    if a.n_nextn:
        text += f", + {a.n_nextn} MTP/NextN block(s) in the file, not run"
    return text


def _vocab(gguf) -> str:
    try:
        tok = Tokenizer.from_gguf(gguf)
    except Exception as exc:  # an unusable tokenizer should not hide the rest of the report
        return f"unusable ({exc})"
    return f"{tok.vocab_size} tokens, {tok.model_name} ({tok.pre or 'default'}), bos {tok.bos_id}, eos {tok.eos_id}"


def _qtypes(gguf) -> str:
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in gguf.tensors.values():
        by_type[t.qtype.name][0] += 1
        by_type[t.qtype.name][1] += t.nbytes
    parts = sorted(by_type.items(), key=lambda kv: -kv[1][1])
    return ", ".join(f"{name}: {n} tensors, {fmt_bytes(b)}" for name, (n, b) in parts)
