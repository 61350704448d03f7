"""GLM-4.5's parts beyond the shared parity runner (test_hf_parity.py): the router against transformers' with
group-limited routing (GLM ships one group; DeepSeek-V3 uses the same rule with eight), leading dense layers kept
resident, and trailing MTP/NextN blocks in the file that are skipped."""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType

from moestream.engine.loader import inspect_file, load_model
from moestream.layers.grouped_router import GroupLimitedRouter
from moestream.layers.linear import QuantLinear
from moestream.formats.weight import QuantWeight
from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.tiny_models import gguf_path
from tests.models.test_hf_parity import PROMPT, our_logits

_F32 = GGMLQuantizationType.F32


def _hf_router(n_experts: int, k: int, groups: int, groups_used: int, scale: float):
    from transformers import Glm4MoeConfig
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeTopkRouter

    config = Glm4MoeConfig(hidden_size=32, n_routed_experts=n_experts, num_experts_per_tok=k, n_group=groups,
                           topk_group=groups_used, routed_scaling_factor=scale, norm_topk_prob=True)
    router = Glm4MoeTopkRouter(config)
    torch.manual_seed(7)
    with torch.no_grad():
        router.weight.normal_(0, 0.3)
        router.e_score_correction_bias.normal_(0, 0.1)
    return router


def _f32_weight(w: torch.Tensor) -> QuantWeight:
    # w: [E, D] float32 -> its GGUF F32 bytes, [E, 4 D] uint8
    return QuantWeight(w.contiguous().view(torch.uint8).clone(), _F32, tuple(w.shape))


def test_group_limited_router_matches_transformers():
    for groups, groups_used in ((1, 1), (4, 2), (8, 3)):
        hf = _hf_router(32, 4, groups, groups_used, 2.5)
        ours = GroupLimitedRouter(
            QuantLinear(_f32_weight(hf.weight.detach())), 4, scoring="sigmoid",
            bias=hf.e_score_correction_bias.clone(), normalize=True, scale=2.5, n_groups=groups,
            groups_used=groups_used)
        x = torch.randn(64, 32)
        with torch.no_grad():
            _, ref_weights, ref_ids = hf(x)
        ids, weights, _ = ours.route(x)
        order, ref_order = ids.argsort(-1), ref_ids.argsort(-1)
        assert torch.equal(ids.gather(1, order), ref_ids.gather(1, ref_order)), (groups, groups_used)
        torch.testing.assert_close(weights.gather(1, order), ref_weights.gather(1, ref_order), rtol=1e-5, atol=1e-6)
        if groups > 1:  # every token's experts lie in at most `groups_used` groups
            assert max(len(set((row // (32 // groups)).tolist())) for row in ids) <= groups_used


def test_leading_dense_layer_is_resident_and_has_no_experts():
    lm = load_model(gguf_path("glm4moe"), progress=False)
    assert lm.args.n_dense_leading == 1 and lm.args.moe_layers == (1, 2)
    assert lm.experts.layers == (1, 2)
    assert "blk.0.ffn_gate.weight" in inspect_file(gguf_path("glm4moe")).resident_names and not hasattr(lm.model.blocks[0].ffn, "router")
    assert type(lm.model.blocks[1].ffn.router) is GroupLimitedRouter


def test_trailing_nextn_block_is_in_the_file_but_not_run(tmp_path):
    """A file written with MTP (as GLM-4.5's are): block_count counts one more block, whose tensors (a full layer
    with experts, plus the NextN projections) follow the last layer. None of it is loaded or run."""
    src = gguf_path("glm4moe")
    n = 3

    def add_block(items):
        last = []
        for name, data, qtype in items:
            yield name, data, qtype
            if name.startswith(f"blk.{n - 1}."):
                last.append((name, data, qtype))
        for name, data, qtype in last:
            yield name.replace(f"blk.{n - 1}.", f"blk.{n}.", 1), data, qtype
        d = 64
        yield f"blk.{n}.nextn.eh_proj.weight", np.zeros((d, 2 * d), np.float32), _F32
        for part in ("enorm", "hnorm", "shared_head_norm"):
            yield f"blk.{n}.nextn.{part}.weight", np.ones(d, np.float32), _F32

    def more_blocks(meta):
        meta = dict(meta)
        value, vtype, sub = meta["glm4moe.block_count"]
        meta["glm4moe.block_count"] = (value + 1, vtype, sub)
        meta["glm4moe.nextn_predict_layers"] = (1, vtype, sub)
        return meta

    mtp = copy_gguf(src, tmp_path / "mtp.gguf", edit_tensors=add_block, edit_metadata=more_blocks)
    lm = load_model(mtp, progress=False)
    assert lm.args.n_layers == n and lm.args.n_nextn == 1 and len(lm.model.blocks) == n
    assert f"blk.{n}.ffn_gate_exps.weight" in lm.gguf.tensors
    assert not any(name.startswith(f"blk.{n}.") for name in inspect_file(mtp).resident_names)
    assert lm.experts.layers == (1, 2)
    assert torch.equal(our_logits(mtp, PROMPT), our_logits(src, PROMPT))

