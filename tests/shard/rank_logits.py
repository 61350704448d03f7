"""Run as one rank of an expert-sharded job (torchrun, or RANK/WORLD_SIZE/MASTER_* set by the test): rank 0 writes
the greedy logits of tests/cache/streaming_helpers.py's prompt and the run's per-rank counters to OUT (torch.save:
{"logits": [...], "ranks": [...]}), the other ranks serve experts. --prefetch turns the prefetcher on.

    rank_logits.py MODEL OUT BUDGET_BYTES|auto [PLAN.json] [--prefetch]"""

import sys

from moestream.cache.config import CacheConfig
from moestream.engine.loader import load_model
from moestream.engine.sharded import ShardConfig, run_expert_rank
from moestream.shard.setup import expert_rank


def main(model: str, out: str, budget: str, *rest: str) -> int:
    import torch

    from moestream.engine.shard_report import shard_summary
    from tests.cache.streaming_helpers import greedy_logits

    plan = next((a for a in rest if a != "--prefetch"), None)
    cache = CacheConfig(ram_budget=None if budget == "auto" else int(budget), prefetch="--prefetch" in rest)
    shard = ShardConfig(plan_file=plan, timeout=30)
    if expert_rank() > 0:
        return run_expert_rank(model, cache, None, shard)
    lm = load_model(model, progress=False, cache=cache, shard=shard)
    try:
        logits = greedy_logits(lm)
        torch.save({"logits": logits, "ranks": shard_summary(lm.sharding, lm.cache)["shard_ranks"]}, out)
    finally:
        lm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
