"""Settings a running engine takes without reloading its model (`moestream serve`'s SIGHUP reload).

Live: the scheduler's batch and queue limits, the expert cache's RAM budget (shrinking evicts down to it, in the
policy's order; growing takes effect at once) and the prefetcher (on, off, predictor, depth, threshold). Each is
applied by `apply_live` on the engine thread between two steps (`Scheduler.between_steps`), so no step sees a
setting change halfway. Everything else in an EngineConfig (the file, context, threads, reader, policy, pins,
repacking, drafting, the prompt cache) shapes what is loaded: `reload_fields` names it, and the server then
opens a new engine with it instead."""

from __future__ import annotations

import dataclasses

from .llm import Engine, EngineConfig
from .loader import set_prefetch

LIVE_FIELDS = ("max_batch", "max_queue", "progress")
LIVE_CACHE_FIELDS = ("ram_budget", "prefetch", "predictor", "prefetch_depth", "prefetch_threshold")


def reload_fields(old: EngineConfig, new: EngineConfig) -> list[str]:
    """The fields that differ between `old` and `new` and need a new engine (model reload) to take effect."""
    out = [f.name for f in dataclasses.fields(EngineConfig)
           if f.name not in LIVE_FIELDS + ("cache",) and getattr(old, f.name) != getattr(new, f.name)]
    return out + [f"cache.{f.name}" for f in dataclasses.fields(old.cache)
                  if f.name not in LIVE_CACHE_FIELDS and getattr(old.cache, f.name) != getattr(new.cache, f.name)]


def live_changes(old: EngineConfig, new: EngineConfig) -> list[str]:
    """The live fields that differ (what `apply_live` will change)."""
    out = [name for name in LIVE_FIELDS[:2] if getattr(old, name) != getattr(new, name)]
    return out + [name for name in LIVE_CACHE_FIELDS if getattr(old.cache, name) != getattr(new.cache, name)]


def apply_live(engine: Engine, new: EngineConfig) -> None:
    """Engine thread, between steps: take `new`'s live fields (its other fields must equal the engine's). A budget
    the cache refuses raises ConfigError before anything changed."""
    old, cache = engine.config, engine.cache
    if cache is not None and new.cache.ram_budget != old.cache.ram_budget and new.cache.ram_budget is not None:
        cache.resize(new.cache.ram_budget, engine.args.n_experts_used)
    if any(getattr(old.cache, n) != getattr(new.cache, n) for n in LIVE_CACHE_FIELDS[1:]):
        set_prefetch(engine.lm, new.cache)
    engine.scheduler.max_batch, engine.scheduler.max_waiting = new.max_batch, new.max_queue
    engine.config = dataclasses.replace(new, cache=dataclasses.replace(
        new.cache, ram_budget=new.cache.ram_budget or old.cache.ram_budget))
