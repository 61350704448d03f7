"""DeepSeek's multi-head latent attention beyond the shared parity runner (test_hf_parity.py runs both tiny
DeepSeek configs against transformers): the older single attn_kv_b layout gives the logits the absorbed
attn_k_b/attn_v_b layout gives, and the KV cache holds only the compressed latent and the positional key."""

from __future__ import annotations

import numpy as np
import torch

from moestream.engine.loader import load_model
from moestream.engine.sequence import new_sequence
from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.tiny_models import gguf_path, load_hf_model
from tests.models.test_hf_parity import PROMPT, our_logits


def _merge_kv_b(items):
    """attn_k_b [H, r, dn] + attn_v_b [H, dv, r] -> attn_kv_b [H (dn + dv), r], as files converted before the
    absorbed layout store it (per head: K_h = k_b[h]^T, then V_h)."""
    pending: dict[str, dict] = {}
    for name, data, qtype in items:
        if not name.endswith(("attn_k_b.weight", "attn_v_b.weight")):
            yield name, data, qtype
            continue
        prefix = name.rsplit("attn_", 1)[0]
        pending.setdefault(prefix, {})[name.rsplit(".", 2)[-2]] = data
        if len(pending[prefix]) == 2:
            parts = pending.pop(prefix)
            k_b, v_b = parts["attn_k_b"], parts["attn_v_b"]
            kv_b = np.concatenate([np.swapaxes(k_b, 1, 2), v_b], axis=1)  # [H, dn + dv, r]
            yield prefix + "attn_kv_b.weight", np.ascontiguousarray(kv_b.reshape(-1, kv_b.shape[-1])), qtype


def _old_metadata(meta):
    """The keys as converters wrote them before the absorbed layout: key/value lengths are a head's (dn + dr, dv),
    every head has its own K/V head, and there are no *_mla keys."""
    meta = dict(meta)
    mla_key, v_mla = meta.pop("deepseek2.attention.key_length_mla"), meta.pop("deepseek2.attention.value_length_mla")
    meta["deepseek2.attention.key_length"] = mla_key
    meta["deepseek2.attention.value_length"] = v_mla
    heads = meta["deepseek2.attention.head_count"]
    meta["deepseek2.attention.head_count_kv"] = (heads[0], *meta["deepseek2.attention.head_count_kv"][1:])
    return meta


def test_older_kv_b_layout_gives_the_same_logits(tmp_path):
    src = gguf_path("deepseek2")  # F32: the merge is exact
    old = copy_gguf(src, tmp_path / "kv_b.gguf", edit_tensors=_merge_kv_b, edit_metadata=_old_metadata)
    lm = load_model(old, progress=False)
    assert "blk.1.attn_kv_b.weight" in lm.gguf.tensors and "blk.1.attn_k_b.weight" not in lm.gguf.tensors
    assert "deepseek2.attention.key_length_mla" not in lm.gguf.metadata
    assert lm.args == load_model(src, progress=False).args  # the same widths, read from the other convention
    torch.testing.assert_close(our_logits(old, PROMPT), our_logits(src, PROMPT), rtol=1e-5, atol=1e-5)


def test_kv_cache_holds_the_latent_and_the_positional_key():
    lm = load_model(gguf_path("deepseek2"), progress=False)
    a = lm.args
    assert lm.model.kv_dims == (1, a.kv_lora_rank, a.rope_dim) == (1, 32, 16)
    seq = new_sequence(lm.model, PROMPT, 512)
    assert seq.kv.k[0].shape[::2] == (1, 32) and seq.kv.v[0].shape[::2] == (1, 16)
    # per token and layer: 48 floats, against 4 heads x (80 key + 24 value) dims uncompressed
    assert (a.kv_lora_rank + a.rope_dim) * 4 < a.n_heads * (a.nope_dim + a.rope_dim + a.v_head_dim)


def test_yarn_rope_matches_transformers_at_every_position():
    """DeepSeek-V3's YaRN: interpolated low frequencies and attention scores scaled by mscale^2."""
    hf = load_hf_model("deepseek2yarn")
    with torch.no_grad():
        ref = hf(torch.tensor([PROMPT])).logits[0]
    lm = load_model(gguf_path("deepseek2yarn"), progress=False)
    assert lm.args.rope_scaling.kind == "yarn" and lm.args.rope_scaling.factor == 8.0
    ours = our_logits(gguf_path("deepseek2yarn"), PROMPT)
    rel = (ours - ref).abs().amax(-1) / ref.abs().amax(-1)
    assert rel.max() <= 1e-4, rel.tolist()
    plain = our_logits(gguf_path("deepseek2"), PROMPT)  # same weights without YaRN: the scaling does change them
    assert (plain - ours).abs().max() > 1e-2
