"""Expert sharding (`--shard experts` under torchrun): every rank owns a disjoint set of each MoE layer's experts
and streams them from its own copy of the file into its own cache; rank 0 also runs everything else.

Start-up, the same steps on every rank (shard/setup.py checks them): rendezvous, open and check the file, compute
the plan (shard/plan.py), agree on file and plan, open this rank's cache, barrier. Then rank 0 loads the resident
weights and routes every MoE layer's pairs to their owners (shard/remote.py); the other ranks serve their experts
(shard/expert_rank.py) until rank 0 stops them. Only plain SwiGLU experts (layers/experts.py) are sharded; other
expert kinds are refused at start with their name."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..cache.config import CacheConfig
from ..errors import ConfigError, MoestreamError, ShardError
from ..telemetry.units import human_bytes
from ..formats.split import open_gguf
from ..layers.biased_experts import BiasedExpertFFNs
from ..layers.experts import ExpertFFNs
from ..models.decoder import Weights
from ..shard import setup
from ..shard.expert_rank import ExpertRank, say
from ..shard.link import ShardLink
from ..shard.plan import ShardPlan, balanced_plan, plan_from_json
from ..shard.remote import RemoteExperts

DEFAULT_TIMEOUT = 60.0  # seconds any rank waits on another before it calls it failed


@dataclass(frozen=True)
class ShardConfig:
    plan_file: str | None = None  # JSON {"owners": {"<layer>": [rank per expert]}}; default: balanced
    profile: tuple | None = field(default=None, hash=False)  # routing counts [layer][expert]: balance hot experts
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout <= 86400):
            raise ConfigError(f"--shard-timeout must be between 0 and 86400 seconds, got {self.timeout!r}")


@dataclass
class Sharding:
    """Rank 0's membership: the plan, the link to the other ranks, and what it says about them."""

    place: setup.Place
    plan: ShardPlan
    link: ShardLink | None
    remote: RemoteExperts | None = None  # set by attach: the layers' way to the other ranks' experts

    @property
    def owned(self) -> dict[int, frozenset[int]]:
        return self.plan.owned(0)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
        setup.leave()


def join_ranks(info, config: ShardConfig) -> tuple[setup.Place, ShardPlan]:
    """Rendezvous, then agree on file and plan with the other ranks (every rank calls this)."""
    place = setup.place_from_env()
    setup.join(place, config.timeout)
    try:
        plan = make_plan(info, place.world, config)
        setup.agree(place, setup.header_digest(info.gguf), plan)
    except BaseException:
        setup.leave()
        raise
    return place, plan


def make_plan(info, world: int, config: ShardConfig) -> ShardPlan:
    store = info.experts
    if store is None:
        raise ShardError(f"--shard experts: {info.args.arch} has no routed experts to shard")
    if config.plan_file is not None:
        try:
            with open(config.plan_file) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--shard-plan {config.plan_file}: {getattr(exc, 'strerror', None) or exc}") from None
        return plan_from_json(data, store.layers, store.n_experts, world, f"--shard-plan {config.plan_file}")
    profile = [list(row) for row in config.profile] if config.profile is not None else None
    return balanced_plan(store.layers, store.n_experts, world, store.expert_nbytes, profile)


def open_rank0(info, config: ShardConfig, threads_note: str = "") -> Sharding:
    """Rank 0 after join_ranks: wait for the other ranks' caches, then open the link (its heartbeat starts)."""
    place, plan = join_ranks(info, config)
    try:
        setup.ready(place, None, "waiting for the expert ranks to open their caches")
        link = ShardLink(place.world, info.args.n_experts, info.args.d_model, config.timeout) if place.world > 1 \
            else None
    except BaseException:
        setup.leave()
        raise
    return Sharding(place, plan, link)


SHARDABLE = (ExpertFFNs, BiasedExpertFFNs)  # layers/experts.py ExpertRows: `remote` and `expert_rows`


def attach(model, sharding: Sharding) -> None:
    """Send the other ranks' experts to them from every MoE layer (both expert paths)."""
    if sharding.link is None:
        return
    remote = sharding.remote = RemoteExperts(sharding.plan, sharding.link)
    for i, block in enumerate(model.blocks):
        experts = getattr(block.ffn, "experts", None)
        if experts is None:
            continue  # a dense layer
        if type(experts) not in SHARDABLE:
            raise ShardError(f"--shard experts: layer {i}'s experts ({type(experts).__name__}, {model.args.arch}) "
                             f"are not shardable yet; run this model on one rank")
        experts.remote = remote
        if block.native_ffn is not None:
            block.native_ffn.remote = remote


def rank_experts(info, cache, compute) -> dict:
    """An expert rank's experts objects per MoE layer, of the model's kind, reading from this rank's cache. An
    architecture with its own MoE block (ArchSpec.moe: gpt-oss's biased experts) is built by its own builder from
    the block's small resident tensors (router, biases: ArchSpec.moe_shapes), so the rank computes as rank 0."""
    from .loader import _load_resident

    layers = info.experts.layers
    if info.spec.moe is None:
        return {layer: ExpertFFNs(layer, cache, compute) for layer in layers}
    prefixes = {layer: f"blk.{layer}." for layer in layers}
    names = [n for p in prefixes.values() for n in (p + "ffn_gate_inp.weight", *(s[0] for s in
             info.spec.moe_shapes(info.args, p))) if n in info.gguf.tensors]
    weights = Weights(_load_resident(info.gguf, names, progress=False), compute)
    return {layer: info.spec.moe(weights, p, layer, info.args, cache, compute).experts for layer, p in prefixes.items()}


def run_expert_rank(path, cache: CacheConfig, threads: int | None, config: ShardConfig) -> int:
    """A rank > 0: serve this rank's experts until rank 0 stops (0) or goes away (ShardError)."""
    from ..kernels.dispatch import Compute
    from .loader import _install_packer, check_model
    from .streaming import open_cache

    info = check_model(open_gguf(path))
    place, plan = join_ranks(info, config)
    owned = plan.owned(place.rank)
    try:
        try:
            if cache.mmap:
                raise ConfigError("--shard experts streams each rank's experts through its cache; drop --mmap")
            expert_cache = open_cache(info.gguf.paths, info.experts, info.args.n_experts_used, cache,
                                      n_owned=plan.count(place.rank))
        except MoestreamError as exc:
            setup.ready(place, str(exc), "the start-up barrier")  # raises, naming this rank, on every rank
            raise
        try:
            compute = Compute(threads=threads, repack=cache.repack != "off") if threads is not None else \
                Compute(repack=cache.repack != "off")
            _install_packer(compute, expert_cache, cache.repack)
            ffns = rank_experts(info, expert_cache, compute)
            setup.ready(place, None, "the start-up barrier")
            say(f"rank {place.rank}/{place.world}: serving {plan.count(place.rank)} of {info.experts.n_total} experts "
                f"({plan.basis}-balanced) with a {human_bytes(expert_cache.pool.budget)} cache (pid {os.getpid()})")
            ExpertRank(place.rank, expert_cache, ffns, owned, info.args.n_experts, info.args.d_model,
                       config.timeout).serve()
        finally:
            expert_cache.close()
    finally:
        setup.leave()
    return 0
