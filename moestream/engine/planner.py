"""`moestream plan`: measure this machine on the model's own file, size the RAM budget, predict decode speed.

Measured, in a few seconds each:
- reads: the cache's own path (aligned direct reads into slots, all of a layer's misses in flight), with a
  budget of exactly top-k slots so every lookup misses: alternately 1 and top-k random experts per lookup. The
  time of a lookup of j misses is fitted as t(j) = latency + j * per_expert (two means, two unknowns).
- compute: a short decode (random prompt, temperature 1) with the budget being planned, on the real engine, after
  bench's own warm-up; per token, the mean step time less the time spent blocked on reads (the run summary's
  split), over runs of up to 160 tokens until three seconds of decode were measured. With a budget
  holding every expert, the warm-up reads them all (the file's experts at read speed).
The prediction (stated, so it can be checked): per token, compute + for every MoE layer the expected read stall:
with j ~ Binomial(top-k, 1 - h) misses, read together while the k - j hits are computed (first-ready order),
max(0, latency + j * per_expert - (k - j) / k * layer compute), a layer's compute taken as an equal share of the
token's. The hit rate h: from a routing profile (a --stats-json run summary) with the LRU characteristic-time
approximation (Che et al., 2002) for the budget's slots, else the budget's share of experts (uniform routing).
Neither counts the reuse of experts between consecutive tokens, so both under-estimate h."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache.config import CacheConfig, cgroup_limit, memory_facts
from ..cache.layout import SlotLayout
from ..errors import ConfigError
from ..telemetry import rss_bytes
from ..telemetry.units import human_bytes
from .llm import Engine, EngineConfig
from .loader import DEFAULT_CONTEXT_CAP, ModelInfo, inspect_file
from .model_size import model_size
from .sizing import OS_RESERVE, Machine, ModelSize, auto_budget, fixed_bytes, memory_need, minimum_budget, whole_slots
from .streaming import open_cache

READ_SECONDS = 3.0
COMPUTE_TOKENS = 32
COMPUTE_PROMPT = 64
COMPUTE_SECONDS = 3.0  # decode measured in all (one short run swings +-20 % on these VMs)
MAX_COMPUTE_RUNS = 20
RUN_TOKENS = 160  # decode tokens per measured run, as the context allows (a longer one computes longer attention)


@dataclass(frozen=True)
class ReadModel:
    latency_s: float  # a lookup's fixed cost (submit, the first byte, waking the caller)
    per_expert_s: float  # each further expert read in the same lookup
    bandwidth_Bps: float  # bytes moved per second in the top-k lookups
    lookups: int

    def read_time(self, misses: int) -> float:
        return self.latency_s + misses * self.per_expert_s if misses else 0.0

    def layer_stall(self, hit_rate: float, k: int, layer_compute_s: float) -> float:
        """Expected seconds one MoE layer of one token waits on reads, at `hit_rate`, top-`k`: j ~ Binomial(k,
        1 - hit_rate) misses read together while the k - j hits are computed (first-ready order), so the wait is
        what the reads take beyond that compute (`layer_compute_s`: one layer's compute for all k)."""
        miss = 1 - hit_rate
        return sum(math.comb(k, j) * miss ** j * hit_rate ** (k - j)
                   * max(self.read_time(j) - layer_compute_s * (k - j) / k, 0.0) for j in range(1, k + 1))


def measure_reads(info: ModelInfo, config: CacheConfig, seconds: float = READ_SECONDS, seed: int = 0) -> ReadModel:
    """Random expert lookups that all miss, through the cache with top-k slots, for about `seconds`."""
    store, k = info.experts, info.args.n_experts_used
    slot = SlotLayout(store).slot_size
    probe = CacheConfig(ram_budget=k * slot, reader=config.reader, depth=config.depth,
                        chunk_bytes=config.chunk_bytes, direct=config.direct)
    cache = open_cache(info.gguf.paths, store, k, probe)
    rng, times = random.Random(seed), {1: [], k: []}
    try:
        deadline, n = time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline or min(len(v) for v in times.values()) < 3:
            j = (1, k)[n % 2]
            layer = rng.choice(store.layers)
            experts = rng.sample(range(store.n_experts), min(j, store.n_experts))
            t0 = time.perf_counter()
            for _ in cache.acquire(layer, experts):
                pass
            times[j].append(time.perf_counter() - t0)
            n += 1
    finally:
        cache.close()
    return _fit(times, k, slot)


def _fit(times: dict[int, list[float]], k: int, slot: int) -> ReadModel:
    one, many = (sorted(times[j])[len(times[j]) // 2] for j in (1, k))  # medians: a stray slow read is noise
    per = max((many - one) / (k - 1), 0.0) if k > 1 else one
    latency = max(one - per, 0.0) if k > 1 else 0.0
    return ReadModel(latency, per, k * slot / many if many else 0.0, sum(len(v) for v in times.values()))


def measure_compute(path: str, config: EngineConfig, seed: int = 0, seconds: float = COMPUTE_SECONDS
                    ) -> tuple[float, dict]:
    """(seconds of compute per decoded token, the last run summary) of short decodes with `config`'s budget, after
    bench's warm-up (every expert read first when the budget holds them all, then an untimed run); more runs of
    RUN_TOKENS (or what the context allows) until `seconds` of decode were measured."""
    with Engine.open(path, config) as engine:
        n_prompt = max(min(COMPUTE_PROMPT, engine.context_length - COMPUTE_TOKENS - 1), 1)
        result = engine.bench(n_prompt, COMPUTE_TOKENS, seed, warmup=True)
        runs = [result]
        n_more = max(min(engine.context_length - n_prompt - 1, RUN_TOKENS), COMPUTE_TOKENS)
        while sum(r["decode_seconds"] for r in runs) < seconds and len(runs) < MAX_COMPUTE_RUNS:
            runs.append(engine.bench(n_prompt, n_more, seed + len(runs), warmup=False))
    seconds = sum(r["decode_seconds"] - r["io_wait_ms_per_token"] * r["decode_tokens"] / 1e3 for r in runs)
    return seconds / sum(r["decode_tokens"] for r in runs), runs[-1]  # a mean: decode tok/s is a mean too


def hit_rate(slots: int, n_total: int, profile: list[list[int]] | None = None) -> float:
    """Expected LRU hit rate of `slots` slots over `n_total` experts; profile: routing counts [layer][expert]."""
    if slots >= n_total:
        return 1.0
    counts = [c for row in profile or [] for c in row if c > 0]
    if not counts:
        return slots / n_total
    if slots >= len(counts):
        return 1.0
    total = sum(counts)
    p = [c / total for c in counts]
    t = _characteristic_time(p, slots)
    return sum(q * (1 - math.exp(-q * t)) for q in p)


def _characteristic_time(p: list[float], slots: int) -> float:
    """T with sum(1 - exp(-p_i T)) = slots (the expected number of distinct experts seen in T lookups)."""
    lo, hi = 0.0, 1.0
    while sum(1 - math.exp(-q * hi) for q in p) < slots:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(1 - math.exp(-q * mid) for q in p) < slots else (lo, mid)
    return (lo + hi) / 2


def predict_tps(compute_s: float, reads: ReadModel, h: float, k: int, moe_layers: int) -> float:
    """Decode tokens per second: 1 / (compute + every MoE layer's expected read stall), a layer's compute taken
    as an equal share of the token's (an upper bound on what its experts' compute can hide)."""
    return 1.0 / (compute_s + moe_layers * reads.layer_stall(h, k, compute_s / moe_layers))


@dataclass(frozen=True)
class Plan:
    """Everything `moestream plan` measured, chose and predicts for one file and budget."""

    path: str
    size: ModelSize
    machine: Machine
    cgroup_limit: int | None
    context: int
    sequences: int
    budget: int  # the budget planned (whole slots)
    auto: bool  # chosen by auto_budget (else given)
    threads: int
    policy: str
    moe_layers: int
    reads: ReadModel
    compute_s: float
    hit_rate: float
    hit_source: str  # "profile" or "budget share"
    predicted_tps: float
    memory_need: int  # bytes of RAM the process needs with this budget (a container's limit: + OS_RESERVE)

    @property
    def slots(self) -> int:
        return self.budget // self.size.slot_bytes

    @property
    def io_s(self) -> float:
        return max(1.0 / self.predicted_tps - self.compute_s, 0.0)


def make_plan(path: str, budget: int | None, context: int | None, sequences: int, threads: int | None,
              cache: CacheConfig, profile: list[list[int]] | None = None, say=lambda text: None,
              seconds: float = READ_SECONDS) -> Plan:
    """Measure and predict. budget None: auto_budget's; too small for one token's experts is a ConfigError.
    say(text): told before the measurements start; seconds: how long reads and compute are each measured."""
    info = inspect_file(path)
    if info.experts is None:
        raise ConfigError(f"{Path(path).name} has no routed experts: there is no expert budget to plan")
    size, machine = model_size(path), Machine(*memory_facts(), own_bytes=rss_bytes())
    ctx = context or min(info.args.context_length, DEFAULT_CONTEXT_CAP)
    chosen = auto_budget(size, machine, ctx, sequences) if budget is None else whole_slots(size, budget)
    _check_fits(size, machine, chosen, budget, ctx, sequences)
    say(f"measuring reads and compute on {Path(path).name} (a few seconds)")
    reads = measure_reads(info, cache, seconds)
    config = EngineConfig(cache=dataclasses.replace(cache, ram_budget=chosen), threads=threads, context_length=ctx,
                          progress=False)
    compute_s, summary = measure_compute(path, config, seconds=seconds)
    h = hit_rate(chosen // size.slot_bytes, size.expert_slots, profile)
    k, layers = size.experts_per_token, len(info.experts.layers)
    return Plan(str(path), size, machine, cgroup_limit(), ctx, sequences, chosen, budget is None,
                summary["threads"], _policy(size, chosen, sequences, layers), layers, reads, compute_s, h,
                "profile" if profile else "budget share", predict_tps(compute_s, reads, h, k, layers),
                memory_need(size, chosen, ctx, sequences))


def _policy(size: ModelSize, budget: int, sequences: int, layers: int) -> str:
    """lru, unless a batch's experts for one step can exceed the budget (then LRU misses every lookup: `layer`)."""
    step = min(sequences * size.experts_per_token, size.expert_slots // max(layers, 1)) * layers
    return "layer" if sequences > 1 and budget // size.slot_bytes < step else "lru"


def _check_fits(size: ModelSize, machine: Machine, budget: int, given: int | None, context: int,
                sequences: int) -> None:
    least, auto = minimum_budget(size), given is None
    if budget >= least:
        return
    fixed = fixed_bytes(size, context, sequences)
    why = (f"this machine has {human_bytes(machine.room)} free"
           + (f" (memory cgroup: {human_bytes(machine.cgroup_room)} left)" if machine.cgroup_room is not None else "")
           + f"; the resident weights, the KV cache at {context} tokens x {sequences} and the runtime take "
             f"{human_bytes(fixed)}, the OS {human_bytes(OS_RESERVE)}") if auto else \
        f"--ram-budget {human_bytes(given)} holds {budget // size.slot_bytes} expert(s) of {human_bytes(size.slot_bytes)}"
    raise ConfigError(f"{why}: one token's {size.experts_per_token} experts of a layer need "
                      f"{human_bytes(least)}, which does not fit")
