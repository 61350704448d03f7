"""Run as one rank of an expert-sharded job (torchrun, or RANK/WORLD_SIZE/MASTER_* set by the test): rank 0 writes
the greedy logits of tests/cache/streaming_helpers.py's prompt to OUT (torch.save), the other ranks serve experts.

    rank_logits.py MODEL OUT BUDGET_BYTES|auto [PLAN.json]"""

import sys

from moestream.cache.config import CacheConfig
from moestream.engine.loader import load_model
from moestream.engine.sharded import ShardConfig, run_expert_rank
from moestream.shard.setup import expert_rank


def main(model: str, out: str, budget: str, plan: str | None = None) -> int:
    import torch

    from tests.cache.streaming_helpers import greedy_logits

    cache = CacheConfig(ram_budget=None if budget == "auto" else int(budget))
    shard = ShardConfig(plan_file=plan, timeout=30)
    if expert_rank() > 0:
        return run_expert_rank(model, cache, None, shard)
    lm = load_model(model, progress=False, cache=cache, shard=shard)
    try:
        torch.save(greedy_logits(lm), out)
    finally:
        lm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
