"""GLM-4.5 / 4.6 / 4.5-Air (GGUF architecture `glm4moe`): what differs is in the file's metadata and tensors,
which the shared decoder reads (models/args.py, decoder.py): leading dense layers, sigmoid routing with the
selection bias `exp_probs_b`, weights renormalised and scaled by `expert_weights_scale` (GroupLimitedRouter), an
ungated shared expert of `expert_shared_count` experts' width, Q/K/V biases, optional per-head Q/K norms (GLM-4.5
has none), RoPE (NeoX halves) over `rope.dimension_count` of each head's dims, and trailing MTP/NextN blocks
(`nextn_predict_layers`) that are in the file but not run."""

from .decoder import ArchSpec

SPEC = ArchSpec(name="glm4moe", rope="neox", norm_topk=True, qk_norm="head", qk_norm_optional=True,
                ffn_norm="post_attention_norm")
