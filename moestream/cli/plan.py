"""`moestream plan [-m FILE]`: measure this machine on the model's file and say how to run it (engine/planner.py
has the measurements and the prediction model; engine/sizing.py the memory arithmetic)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..engine import OS_RESERVE, READ_SECONDS, Plan, human_bytes, make_plan, parse_bytes
from ..errors import ConfigError
from .options import CACHE, add_model_flag, model_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="measure this machine and recommend budget, threads, policy; predict decode speed")
    add_model_flag(p)
    p.add_argument("--ram-budget", default="auto", metavar="SIZE",
                   help="the budget to plan for (default auto: what --ram-budget auto would take here)")
    p.add_argument("--max-batch", type=int, default=1, metavar="N",
                   help="sequences run at once (a server's --max-batch), for the KV cache's share (default 1)")
    p.add_argument("--profile", metavar="FILE",
                   help="routing profile (a --stats-json file of an earlier run) for the hit-rate estimate")
    p.add_argument("--reader", choices=("auto", "thread", "uring"), default=CACHE.reader)
    p.add_argument("--no-direct", action="store_true", help="buffered reads instead of O_DIRECT")
    p.add_argument("--measure-seconds", type=float, default=READ_SECONDS, metavar="S",
                   help="how long the read and the compute measurements each run; longer is steadier on a noisy "
                        "machine (default %(default)g)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..engine import CacheConfig

    path = model_path(args)
    if not 0.1 <= args.measure_seconds <= 600:
        raise ConfigError(f"--measure-seconds must be between 0.1 and 600, got {args.measure_seconds:g}")
    budget = None if args.ram_budget == "auto" else parse_bytes(args.ram_budget)
    cache = CacheConfig(reader=args.reader, direct=not args.no_direct)
    plan = make_plan(path, budget, args.ctx_size, args.max_batch, args.threads, cache, _profile(args.profile),
                     say=lambda text: print(f"moestream: {text}", file=sys.stderr, flush=True),
                     seconds=args.measure_seconds)
    print(json.dumps(as_json(plan), indent=1) if args.json else "\n".join(report(plan)))
    return 0


def _profile(path: str | None) -> list[list[int]] | None:
    if path is None:
        return None
    from .options import _read_json

    counts = _read_json(path, "--profile").get("routing_counts")
    if not counts:
        raise ConfigError(f"{path} has no routing_counts; write one with --stats-json")
    return counts


def report(p: Plan) -> list[str]:
    s, m, r = p.size, p.machine, p.reads
    limit = f"memory cgroup limit {human_bytes(p.cgroup_limit)}" if p.cgroup_limit else "no memory cgroup limit"
    share = f"{p.slots} of {s.expert_slots} experts" if p.slots < s.expert_slots else f"all {s.expert_slots} experts"
    return [
        f"model     {Path(p.path).name}: resident {human_bytes(s.resident_bytes)}, {s.expert_slots} experts of "
        f"{human_bytes(s.slot_bytes)} ({human_bytes(s.expert_slots * s.slot_bytes)}), top-{s.experts_per_token} "
        f"over {p.moe_layers} MoE layers, KV {human_bytes(s.kv_bytes_per_token)}/token",
        f"machine   {os.cpu_count()} CPUs ({p.threads} kernel threads), {human_bytes(m.free_bytes)} free, {limit}",
        f"memory    resident {human_bytes(s.resident_bytes)} + KV {human_bytes(s.kv_bytes_per_token * p.context * p.sequences)}"
        f" ({p.context} tokens x {p.sequences}) + runtime + OS {human_bytes(OS_RESERVE)}: "
        f"{'auto budget' if p.auto else 'budget'} {human_bytes(p.budget)} ({share})",
        f"reads     {r.latency_s * 1e3:.2f} ms per lookup + {r.per_expert_s * 1e3:.2f} ms per expert "
        f"({r.bandwidth_Bps / 1e9:.2f} GB/s at top-{s.experts_per_token}; {r.lookups} lookups measured)",
        f"compute   {p.compute_s * 1e3:.2f} ms per token (measured: {p.threads} threads, this budget)",
        f"recommend --ram-budget {human_bytes(p.budget).replace(' ', '')} --threads {p.threads} "
        f"--cache-policy {p.policy} --no-prefetch (prefetch cut read waits but not time per token on a disk-bound "
        "run: docs/benchmarks.md)",
        f"predict   hit rate {p.hit_rate:.0%} ({p.hit_source}); per token {p.compute_s * 1e3:.2f} ms compute + "
        f"{p.io_s * 1e3:.2f} ms reads: decode {p.predicted_tps:.1f} tok/s",
        f"container memory limit at least {human_bytes(p.memory_need + OS_RESERVE)} (this need "
        f"{human_bytes(p.memory_need)} + OS {human_bytes(OS_RESERVE)})",
    ]


def as_json(p: Plan) -> dict:
    return {"model": p.path, "ram_budget_bytes": p.budget, "auto": p.auto, "slots": p.slots,
            "expert_slots": p.size.expert_slots, "slot_bytes": p.size.slot_bytes,
            "resident_bytes": p.size.resident_bytes, "context": p.context, "sequences": p.sequences,
            "kv_bytes": p.size.kv_bytes_per_token * p.context * p.sequences,
            "free_bytes": p.machine.free_bytes, "cgroup_room_bytes": p.machine.cgroup_room,
            "cgroup_limit_bytes": p.cgroup_limit, "threads": p.threads, "cache_policy": p.policy, "prefetch": False,
            "read_latency_s": p.reads.latency_s, "read_per_expert_s": p.reads.per_expert_s,
            "read_bandwidth_Bps": p.reads.bandwidth_Bps, "compute_s_per_token": p.compute_s,
            "io_s_per_token": p.io_s, "hit_rate": p.hit_rate, "hit_rate_source": p.hit_source,
            "predicted_decode_tps": p.predicted_tps, "memory_need_bytes": p.memory_need,
            "container_memory_bytes": p.memory_need + OS_RESERVE}
