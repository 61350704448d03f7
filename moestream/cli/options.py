"""Command-line flags shared by several subcommands, and the EngineConfig they build.

Every default shown here is read from the config dataclasses (EngineConfig, CacheConfig, SamplingParams), never
written twice: the flags are names for their fields, so `moestream serve` and `moestream generate` given the same
flags configure the same engine, and a default changed in the engine changes the help with it."""

from __future__ import annotations

import argparse
import json
import sys

from ..assets import DESCRIPTION, default_model_path
from ..engine import (CACHE_POLICIES, DEFAULT_CONTEXT_CAP, DEFAULT_SHARD_TIMEOUT, DEFAULT_THRESHOLDS, DEVICES,
                      DRAFT_MODES, PREDICTORS, CacheConfig, EngineConfig, SamplingParams, ShardConfig, expert_rank,
                      human_bytes, parse_bytes, resolve_device, run_expert_rank)
from ..errors import ConfigError

ENGINE, CACHE, SAMPLING = EngineConfig(), CacheConfig(), SamplingParams()  # the defaults


def add_model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, metavar="FILE",
                   help="GGUF file of a Mixture-of-Experts model (default: the embedded tiny model)")
    p.add_argument("-c", "--ctx-size", type=int, default=None, metavar="N",
                   help=f"context length (default: the model's, capped at {DEFAULT_CONTEXT_CAP})")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="threads for the CPU kernels (default: one per physical core available to this process)")


def add_batch_flags(p: argparse.ArgumentParser) -> None:
    """Continuous batching limits (`moestream serve`; one-request commands keep the defaults)."""
    p.add_argument("--max-batch", type=int, default=ENGINE.max_batch, metavar="N",
                   help="sequences per step (default %(default)s)")
    p.add_argument("--max-queue", type=int, default=ENGINE.max_queue, metavar="N",
                   help="requests waiting for a slot before 429 (default %(default)s)")
    p.add_argument("--prefill-chunk", type=int, default=ENGINE.prefill_chunk, metavar="N",
                   help="prompt tokens per step, over all sequences still reading their prompt (default %(default)s)")
    p.add_argument("--prompt-cache", default="0", metavar="SIZE",
                   help="keep finished requests' KV rows, up to SIZE (e.g. 2GiB), and reuse them for a new request "
                        "that starts with the same tokens (an agent's system prompt and history): its prompt is "
                        "not computed again. Same output as without it (default 0: off)")
    p.add_argument("--prompt-cache-dir", metavar="DIR", default=None,
                   help="also keep the prompt cache's blocks in DIR, so they outlive a restart (one subdirectory "
                        "per model file)")
    p.add_argument("--prompt-cache-disk", default="10GiB", metavar="SIZE",
                   help="bytes the prompt cache may keep in --prompt-cache-dir (default %(default)s)")


def add_draft_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding")
    g.add_argument("--draft", choices=DRAFT_MODES, default=ENGINE.draft,
                   help="ngram: guess the next tokens from where the last few occurred earlier in the text (prompt "
                        "lookup), verified in one batched step; pays on text that repeats its context (code edits, "
                        "quotes). Output is the same as without it at temperature 0, and distributed the same when "
                        "sampling (default %(default)s)")
    g.add_argument("--draft-tokens", type=int, default=ENGINE.draft_tokens, metavar="N",
                   help="most tokens guessed per step (default %(default)s)")
    g.add_argument("--draft-model", metavar="FILE", default=ENGINE.draft_model,
                   help="a small GGUF with the same vocabulary that guesses the next tokens greedily (implies "
                        "--draft model); the output is the same as without it at temperature 0")


def engine_config(args: argparse.Namespace, **fields) -> EngineConfig:
    """The EngineConfig of the -c/-t, streaming and draft flags; `fields` sets the others (batch limits, progress)."""
    return EngineConfig(cache=cache_config(args), threads=args.threads, context_length=args.ctx_size,
                        draft=_draft_mode(args), draft_model=getattr(args, "draft_model", ENGINE.draft_model),
                        draft_tokens=getattr(args, "draft_tokens", ENGINE.draft_tokens), shard=shard_config(args),
                        **fields)


def shard_config(args: argparse.Namespace) -> ShardConfig | None:
    """--shard experts: the plan and timeout every rank uses (a --profile balances the plan by routing counts)."""
    if getattr(args, "shard", None) is None:
        return None
    profile = None
    if args.profile:
        counts = _read_json(args.profile, "--profile").get("routing_counts")
        if not counts:
            raise ConfigError(f"{args.profile} has no routing_counts; write one with --stats-json")
        profile = tuple(tuple(row) for row in counts)
    return ShardConfig(plan_file=args.shard_plan, profile=profile, timeout=args.shard_timeout)


def run_as_expert_rank(args: argparse.Namespace) -> bool:
    """Under `--shard experts`, ranks other than 0 serve their experts here instead of running the command."""
    if getattr(args, "shard", None) is None or expert_rank() == 0:
        return False
    run_expert_rank(model_path(args), cache_config(args), args.threads, shard_config(args))
    return True


def say_context(engine) -> None:
    """A warning when -c goes past the model's trained context."""
    if engine.context_warning:
        print(f"moestream: warning: {engine.context_warning}", file=sys.stderr)


def _draft_mode(args: argparse.Namespace) -> str:
    mode = getattr(args, "draft", ENGINE.draft)
    return "model" if getattr(args, "draft_model", None) and mode == "off" else mode


def batch_fields(args: argparse.Namespace) -> dict:
    """The EngineConfig fields of add_batch_flags."""
    return {"max_batch": args.max_batch, "max_queue": args.max_queue, "prefill_chunk": args.prefill_chunk,
            "prompt_cache": parse_bytes(args.prompt_cache), "prompt_cache_dir": args.prompt_cache_dir,
            "prompt_cache_disk": parse_bytes(args.prompt_cache_disk)}


def model_path(args: argparse.Namespace) -> str:
    """The -m file, or the embedded default model (said on stderr, so the user knows what is answering).
    `-m hf:REPO[:QUANT|:FILE]` is a model in the Hugging Face cache, pulled first if it is not there (cli/hub.py)."""
    if args.model is not None and args.model.startswith("hf:"):
        from .hub import resolve_model  # lazily: huggingface_hub costs startup time only when used
        return resolve_model(args.model.removeprefix("hf:"))
    if args.model is not None:
        return args.model
    path = default_model_path()
    print(f"moestream: no -m given; using the embedded default model {path.name} ({DESCRIPTION})", file=sys.stderr)
    return str(path)


def add_sampling_flags(p: argparse.ArgumentParser, seed: bool = True, title: str = "sampling") -> None:
    g, d = p.add_argument_group(title), SAMPLING
    g.add_argument("--temp", type=float, default=d.temperature, help="temperature; 0 = greedy (default %(default)s)")
    g.add_argument("--top-k", type=int, default=d.top_k,
                   help="keep the k most likely tokens; 0 = off (default %(default)s)")
    g.add_argument("--top-p", type=float, default=d.top_p, help="nucleus mass; 1 = off (default %(default)s)")
    g.add_argument("--min-p", type=float, default=d.min_p,
                   help="drop tokens below min-p x best; 0 = off (default %(default)s)")
    g.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty, help="1 = off (default %(default)s)")
    g.add_argument("--repeat-last-n", type=int, default=d.repeat_last_n,
                   help="window of the repeat penalty (default %(default)s)")
    g.add_argument("--presence-penalty", type=float, default=d.presence_penalty)
    g.add_argument("--frequency-penalty", type=float, default=d.frequency_penalty)
    if seed:
        g.add_argument("--seed", type=int, default=d.seed, help="random seed for reproducible sampling")


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
        seed=getattr(args, "seed", None),
    )


def add_cache_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("expert streaming")
    g.add_argument("--ram-budget", metavar="SIZE", default="auto",
                   help="RAM for cached experts, e.g. 8GiB; auto (default): all experts if they fit, else what is "
                        "free after the resident weights, the KV cache at full context, the runtime and the OS "
                        "(`moestream plan` shows the arithmetic)")
    g.add_argument("--reader", choices=("auto", "thread", "uring"), default=CACHE.reader,
                   help="read backend (default %(default)s)")
    g.add_argument("--io-depth", type=int, default=CACHE.depth, metavar="N", help="reads in flight (default %(default)s)")
    g.add_argument("--io-chunk", default=None, metavar="SIZE",
                   help=f"bytes per read request (default {human_bytes(CACHE.chunk_bytes)})")
    g.add_argument("--no-direct", action="store_true", help="buffered reads instead of O_DIRECT")
    g.add_argument("--mmap", action="store_true", help="no cache: read experts through the memory map")
    g.add_argument("--prefetch", action=argparse.BooleanOptionalAction, default=CACHE.prefetch,
                   help="read ahead the experts the predictor expects the next layers to use (default off: on a "
                        "disk-bound run it cut waiting on reads but not the time per token, see docs/benchmarks.md)")
    g.add_argument("--predictor", choices=PREDICTORS, default=CACHE.predictor,
                   help="lookahead (the next layers' routers on this layer's hidden state), history (per-layer "
                        "transitions learned online) or combined (default %(default)s)")
    g.add_argument("--prefetch-depth", type=int, default=CACHE.prefetch_depth, metavar="N",
                   help="MoE layers ahead to predict and read (default %(default)s)")
    g.add_argument("--prefetch-threshold", type=float, default=CACHE.prefetch_threshold, metavar="P",
                   help="least predicted chance (0-1) for an expert to be read ahead (default per predictor: "
                        + ", ".join(f"{p} {t:g}" for p, t in DEFAULT_THRESHOLDS.items())
                        + "; lookahead scores only each token's top-k above zero)")
    g.add_argument("--cache-policy", choices=CACHE_POLICIES, default=CACHE.policy,
                   help="eviction: lru, lfu, layer (evict the layers the pass left most recently first; keeps a stable "
                        "part of the model when a step's experts exceed the budget), layer-lfu (layer order, least "
                        "used first within a layer) (default %(default)s)")
    g.add_argument("--verify-experts", action="store_true",
                   help="hash each expert's bytes on its first read and check every later read against it: an error "
                        "instead of wrong output if the model file changes on disk while running (default off)")
    g.add_argument("--repack", choices=("auto", "on", "off"), default=CACHE.repack,
                   help="rewrite Q4_0/Q8_0 weights in RAM into the 8-row layout the native kernels run ~2x faster: "
                        "on = resident weights and every expert as it is read; auto = resident weights, experts as "
                        "read when the budget holds them all, else once an expert is hot; off = GGUF layout "
                        "(default %(default)s)")
    g.add_argument("--pin", metavar="FILE", help="JSON list of [layer, expert] pairs to keep in RAM")
    g.add_argument("--pin-hot", type=int, default=0, metavar="N",
                   help="keep the N most used experts of --profile in RAM")
    g.add_argument("--profile", metavar="FILE", help="routing profile: a --stats-json file from an earlier run")
    g.add_argument("--stats-json", metavar="FILE", help="write the run summary as JSON")
    add_shard_flags(p)
    d = p.add_argument_group("device")
    d.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to compute: auto (default; the CPU: the GPU tier is not in this build yet), cpu, cuda")
    d.add_argument("--vram-budget", metavar="SIZE", default=None, help="VRAM for cached experts (GPU tier)")


def add_shard_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("expert sharding (under torchrun; docs/sharding.md)")
    g.add_argument("--shard", choices=("experts",), default=None,
                   help="experts: every torchrun rank owns a share of each layer's experts in its own cache; rank 0 "
                        "runs the rest and the command, the others serve their experts")
    g.add_argument("--shard-plan", metavar="FILE", default=None,
                   help='JSON {"owners": {"<layer>": [rank of each expert]}} (default: balanced by bytes, or by '
                        "--profile's routing counts)")
    g.add_argument("--shard-timeout", type=float, default=DEFAULT_SHARD_TIMEOUT, metavar="SECONDS",
                   help="a rank that does not answer within this is failed (default %(default)g)")


def cache_config(args: argparse.Namespace) -> CacheConfig:
    resolve_device(args.device, None if args.vram_budget is None else parse_bytes(args.vram_budget))
    return CacheConfig(
        ram_budget=None if args.ram_budget in (None, "auto") else parse_bytes(args.ram_budget), reader=args.reader,
        depth=args.io_depth, chunk_bytes=CACHE.chunk_bytes if args.io_chunk is None else parse_bytes(args.io_chunk),
        direct=not args.no_direct, mmap=args.mmap,
        pin=tuple(_pins(args)), policy=args.cache_policy, prefetch=args.prefetch,
        predictor=args.predictor, prefetch_depth=args.prefetch_depth, prefetch_threshold=args.prefetch_threshold,
        verify=args.verify_experts, repack=args.repack,
    )


def _pins(args: argparse.Namespace) -> list[tuple[int, int]]:
    pins = [tuple(p) for p in _read_json(args.pin, "--pin")] if args.pin else []
    if args.pin_hot:
        if not args.profile:
            raise ConfigError("--pin-hot needs --profile FILE (a --stats-json file from an earlier run)")
        counts = _read_json(args.profile, "--profile").get("routing_counts")
        if not counts:
            raise ConfigError(f"{args.profile} has no routing_counts; write one with --stats-json")
        ranked = sorted(((c, layer, e) for layer, row in enumerate(counts) for e, c in enumerate(row)), reverse=True)
        pins += [(layer, e) for c, layer, e in ranked[:args.pin_hot] if c > 0]
    if not all(len(p) == 2 and all(isinstance(v, int) for v in p) for p in pins):
        raise ConfigError(f"{args.pin}: expected a JSON list of [layer, expert] integer pairs")
    return sorted(set(pins))


def _read_json(path: str, flag: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {path}: cannot read JSON ({exc})") from None
