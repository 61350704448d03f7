"""Print the run summary (stderr) and write it as JSON."""

from __future__ import annotations

import json
import sys

from ..errors import ConfigError
from .units import fmt_bytes


def print_run_summary(r: dict) -> None:
    lines = [
        f"prefill  {r['prompt_tokens']:>6} tokens  {r['prefill_tps']:9.2f} tok/s",
        f"decode   {r['decode_tokens']:>6} steps   {r['decode_tps']:9.2f} tok/s   step p50 {r['step_ms']['p50']:.1f} ms"
        f" p95 {r['step_ms']['p95']:.1f} p99 {r['step_ms']['p99']:.1f}",
        f"compute per token p50 {r['compute_ms_per_token']['p50']:.1f} ms p95 {r['compute_ms_per_token']['p95']:.1f}"
        f" p99 {r['compute_ms_per_token']['p99']:.1f} | waiting on I/O {100 * r['io_wait_share']:.1f}% of decode"
        f" ({r['io_wait_ms_per_token']:.1f} ms/token)",
    ]
    if "lookups" in r:
        lat = r["read_latency_ms"]
        lines += [
            f"cache    {r['hits']} hits / {r['lookups']} lookups ({100 * r['hit_rate']:.1f}%), {r['misses']} misses, "
            f"{r['evictions']} evictions, policy {r['policy']}, {r['pinned_experts']} pinned",
            f"reads    {fmt_bytes(r['bytes_read'])} ({fmt_bytes(int(r['decode_bytes_read_per_token']))}/decoded token)"
            f" at {fmt_bytes(int(r['read_throughput_Bps']))}/s; per expert p50 {lat['p50']:.1f} ms p95 {lat['p95']:.1f}"
            f" p99 {lat['p99']:.1f}; {r['reader']} reader, {'direct' if r['direct_io'] else 'buffered'}",
            _prefetch_line(r),
            _verify_line(r),
            _pack_line(r),
            f"memory   budget {fmt_bytes(r['ram_budget_bytes'])} ({r['cache_slots']} slots of "
            f"{fmt_bytes(r['slot_bytes'])}, {fmt_bytes(r['cache_allocated_bytes'])} used), resident weights "
            f"{fmt_bytes(r['resident_bytes'])}, peak RSS {fmt_bytes(r['peak_rss_bytes'])}",
        ]
    else:
        experts = "experts through the memory map" if r["expert_bytes"] else "no experts (dense model)"
        lines.append(f"memory   resident weights {fmt_bytes(r['resident_bytes'])}, {experts}, "
                     f"peak RSS {fmt_bytes(r['peak_rss_bytes'])}")
    lines.append(_draft_line(r))
    lines += shard_lines(r)
    print("\n".join(line for line in lines if line), file=sys.stderr)


def shard_lines(r: dict) -> list[str]:
    """Expert sharding: one line per rank (hit rate, bytes read, compute, and the network's time per token)."""
    ranks = r.get("shard_ranks") or []
    tokens = max(1, r.get("decode_tokens", 0) + r.get("prompt_tokens", 0))
    lines = [f"shard    {r['shard_world']} ranks, plan balanced by {r['shard_plan']}"] if ranks else []
    for x in ranks:
        line = (f"  rank {x['rank']}  {x['experts']} experts, hit {100 * x.get('hit_rate', 0.0):.1f}% of "
                f"{x.get('lookups', 0)} lookups, read {fmt_bytes(x.get('bytes_read', 0))}")
        if x["rank"]:
            line += (f", experts {1e3 * x['compute_seconds'] / tokens:.2f} ms/token, network "
                     f"{1e3 * x['network_seconds'] / tokens:.2f} ms/token, rank 0 waited "
                     f"{1e3 * x['waited_seconds'] / tokens:.2f} ms/token")
        if x.get("prefetch_issued"):
            line += f", read ahead {x['prefetch_issued']} ({x.get('prefetch_useful', 0)} used)"
        lines.append(line)
    if r.get("shard_fault"):
        lines.append(f"  failed: {r['shard_fault']}")
    return lines


def _pack_line(r: dict) -> str:
    if not r.get("packed_experts"):
        return ""
    return (f"repack   {r['packed_experts']} experts rewritten into the packed layout ({r['pack_mode']}) in "
            f"{r['pack_seconds']:.2f} s")


def _draft_line(r: dict) -> str:
    if r.get("draft", "off") == "off":
        return ""
    return (f"draft    {r['draft']}: {r['draft_tokens_accepted']} of {r['draft_tokens_proposed']} drafted tokens "
            f"kept ({100 * r['draft_acceptance']:.0f}%)")


def _prefetch_line(r: dict) -> str:
    if not r.get("prefetch"):
        return "prefetch off"
    prec, rec = r["predictor_precision"], r["predictor_recall"]
    mean = lambda d: sum(d.values()) / len(d) if d else 0.0  # noqa: E731
    return (f"prefetch ({r['predictor']}) {r['prefetch_issued']} issued, {r['prefetch_useful']} useful "
            f"({r['prefetch_late']} late), {r['prefetch_wasted']} wasted, {r['prefetch_cancelled']} cancelled; "
            f"predictor precision {100 * mean(prec):.0f}% recall {100 * mean(rec):.0f}% (mean over layers)")


def _verify_line(r: dict) -> str:
    if not r.get("verify_experts"):
        return ""  # no line: the summary is long enough without saying what is off
    return (f"verify   on: {fmt_bytes(r['verified_bytes'])} in {r['verified_reads']} re-reads checked against their "
            f"first read ({fmt_bytes(r['verify_hashed_bytes'])} hashed in all)")


def write_json(path: str | None, r: dict) -> None:
    if not path:
        return
    try:
        with open(path, "w") as f:
            json.dump(r, f, indent=1)
    except OSError as exc:
        raise ConfigError(f"--stats-json {path}: {exc.strerror}") from None
