"""The engine facade: `Engine.open(path, EngineConfig)` is how everything outside engine/ runs a model.

How the pieces fit together:
- `EngineConfig` (frozen, checked in __post_init__) is everything that configures an engine: how experts are
  streamed (`cache`, a cache/config.py CacheConfig), kernel threads, context length, and the scheduler's limits
  (max batch, max queue, prefill chunk). Its defaults are the only ones: the CLI flags (cli/options.py) read
  them, and `moestream serve` builds the same EngineConfig from the same flags.
- `Engine.open` loads the model (loader.py: resident weights into RAM, routed experts behind the byte-budgeted
  ExpertCache, optional prefetch) and builds one Scheduler over it. The tokenizer and chat template are read
  from the GGUF on first use, so `bench` runs on a file whose tokenizer it never needs.
- The scheduler's `step()` (scheduler.py) is the only decode loop. `generate()` submits one request and drives
  steps in the calling thread (generate.py); `serve` drives the same scheduler from its engine thread
  (`scheduler.run`, server/worker.py); `bench` prefills a random prompt in one step and times each decode step
  of a seeded temperature-1 request on a scheduler of its own size (the step code is the same).
- The run summary (report.py) is kept here: every `generate()` adds its prompt, prefill time and decode steps,
  and `summary()` returns the flat dict the CLI prints and --stats-json writes.
cli/ and server/ import this package only (plus errors and assets; tests/test_imports.py enforces it), so what
they need from below (tokenizer, cache config parsing, predictor names) is re-exported by engine/__init__.py."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import torch
from tqdm import tqdm

from ..cache.config import CacheConfig
from ..errors import ConfigError
from ..kernels.cpu import NativeClock
from ..tokenizer import ChatTemplate, Tokenizer, encode_chat
from .drafting import DRAFT_MODES, DRAFT_TOKENS
from .generate import TokenEvent, drive, generate, request
from .grammar import GrammarCompiler
from .loader import DEFAULT_CONTEXT_CAP, LoadedModel, load_model
from .prompt_cache import PromptCache
from .prompt_disk import PromptDisk, model_key
from .report import StepMeter, run_summary
from .shard_report import shard_summary
from .sharded import ShardConfig
from .sampling import SamplingParams
from .scheduler import MAX_BATCH, MAX_WAITING, PREFILL_CHUNK, Scheduler
from .trace import RoutingRecorder, trace_header

MAX_DRAFT_TOKENS = 15  # a verify step feeds 1 + draft tokens: the native attention step takes segments of <= 16


@dataclass(frozen=True)
class EngineConfig:
    cache: CacheConfig = field(default_factory=CacheConfig)  # how routed experts are streamed
    threads: int | None = None  # CPU kernel threads; None: one per physical core available to this process
    context_length: int | None = None  # tokens per sequence; None: the model's, capped at DEFAULT_CONTEXT_CAP
    max_batch: int = MAX_BATCH  # sequences per step
    max_queue: int = MAX_WAITING  # requests waiting for a slot before QueueFull
    prefill_chunk: int = PREFILL_CHUNK  # prompt tokens per step
    progress: bool = True  # a progress bar while loading large resident weights
    draft: str = "off"  # speculative decoding: "off", "ngram" (prompt lookup, engine/drafting.py) or "model"
    draft_tokens: int = DRAFT_TOKENS  # most tokens drafted per step
    draft_model: str | None = None  # draft "model": a small GGUF with the same vocabulary (engine/model_drafter.py)
    prompt_cache: int = 0  # bytes of earlier requests' KV rows kept for reuse by prefix (engine/prompt_cache.py)
    prompt_cache_dir: str | None = None  # where the prompt cache also keeps its blocks, across restarts
    prompt_cache_disk: int = 10 << 30  # bytes the prompt cache may keep in prompt_cache_dir
    shard: ShardConfig | None = None  # --shard experts: this is rank 0 of a torchrun job (engine/sharded.py)

    def __post_init__(self) -> None:
        if not isinstance(self.cache, CacheConfig):
            raise ConfigError(f"EngineConfig.cache must be a CacheConfig, got {type(self.cache).__name__}")
        _at_least(self.threads, 1, "--threads")
        _at_least(self.context_length, 2, "--ctx-size")  # a prompt token and one to generate
        _at_least(self.max_batch, 1, "--max-batch")
        _at_least(self.max_queue, 0, "--max-queue")
        _at_least(self.prefill_chunk, 1, "--prefill-chunk")
        if self.draft not in DRAFT_MODES:
            raise ConfigError(f"unknown --draft {self.draft!r}; choose {' or '.join(DRAFT_MODES)}")
        _at_least(self.draft_tokens, 1, "--draft-tokens")
        _at_least(self.prompt_cache, 0, "--prompt-cache")
        _at_least(self.prompt_cache_disk, 0, "--prompt-cache-disk")
        if self.prompt_cache_dir is not None and not self.prompt_cache:
            raise ConfigError("--prompt-cache-dir keeps the prompt cache's blocks on disk: give --prompt-cache SIZE "
                              "(its RAM tier) too")
        if self.draft == "model" and self.draft_model is None:
            raise ConfigError("--draft model needs --draft-model FILE")
        if self.draft_model is not None and self.draft != "model":
            raise ConfigError(f"--draft-model guesses with a model, but --draft is {self.draft!r}")
        if self.draft_tokens > MAX_DRAFT_TOKENS:
            raise ConfigError(f"--draft-tokens must be at most {MAX_DRAFT_TOKENS} (one verify step of a sequence "
                              f"is a segment of at most 16 tokens), got {self.draft_tokens}")


def _at_least(value: int | None, least: int, flag: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{flag} must be an integer >= {least}, got {value!r}")


def check_rollback(lm: LoadedModel, draft: str, which: str) -> None:
    """Speculative decoding forgets rejected guesses from the cache; a linear-attention layer's state cannot."""
    if draft != "off" and lm.args.linear is not None:
        raise ConfigError(f"--draft {draft}: {which} ({lm.args.arch}) has linear-attention layers, whose recurrent "
                          f"state cannot forget rejected guesses; speculative decoding is not available for it")


class Engine:
    """A loaded model with its tokenizer, chat template, expert cache, scheduler and run summary."""

    def __init__(self, lm: LoadedModel, config: EngineConfig, draft: LoadedModel | None = None):
        """Use Engine.open."""
        self.lm, self.config, self.draft = lm, config, draft
        self.context_length = config.context_length or min(lm.args.context_length, DEFAULT_CONTEXT_CAP)
        if draft is not None:
            check_same_vocabulary(lm, draft)
        check_rollback(lm, config.draft, "the model")
        if draft is not None:
            check_rollback(draft, config.draft, "the draft model")
        self.scheduler = Scheduler(lm.model, self.context_length, config.max_batch, config.max_queue,
                                   config.prefill_chunk, draft=config.draft, draft_tokens=config.draft_tokens,
                                   draft_model=self._draft_model, prompt_cache=self._prompt_cache())
        self._meter = StepMeter(lm.cache)  # decode steps of every generate() call
        self._prompt_tokens, self._prefill_seconds = 0, 0.0

    @property
    def context_warning(self) -> str | None:
        """Said by the commands when -c goes past the context the model was trained for."""
        trained = self.lm.args.context_length
        if self.config.context_length and self.config.context_length > trained:
            return (f"-c {self.config.context_length} is beyond the {trained} tokens {self.lm.path.name} was trained "
                    "for: positions past it give text of falling quality")
        return None

    def _prompt_cache(self) -> PromptCache | None:
        if not self.config.prompt_cache:
            return None
        if self.lm.args.linear is not None:
            raise ConfigError(f"--prompt-cache: {self.lm.args.arch} has linear-attention layers, whose recurrent "
                              "state cannot be cut at a prefix; run it without a prompt cache")
        disk = None
        if self.config.prompt_cache_dir is not None:
            layout = (self.lm.args.n_layers, self.lm.model.kv_dims)
            disk = PromptDisk(Path(self.config.prompt_cache_dir), model_key(self.lm.path, layout),
                              self.config.prompt_cache_disk)
        return PromptCache(self.config.prompt_cache, disk=disk)

    @classmethod
    def open(cls, path: str | Path, config: EngineConfig = EngineConfig(), reader=None) -> Engine:
        """reader: a store Reader to use instead of the configured one (tests inject faults)."""
        lm = load_model(path, progress=config.progress, threads=config.threads, cache=config.cache, reader=reader,
                        context=config.context_length, sequences=config.max_batch, shard=config.shard)
        draft = None
        try:
            if config.draft_model is not None:  # resident or cached as it fits: it is meant to be small
                draft = load_model(config.draft_model, progress=config.progress, threads=config.threads)
            return cls(lm, config, draft)
        except BaseException:
            lm.close()  # the cache's reader threads would outlive a failed open
            if draft is not None:
                draft.close()
            raise

    def close(self) -> None:
        if self.scheduler.prompt_cache is not None:
            self.scheduler.prompt_cache.close()
        self.lm.close()
        if self.draft is not None:
            self.draft.close()

    @property
    def _draft_model(self):
        return None if self.draft is None else self.draft.model

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- what was loaded -------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.lm.path

    @property
    def model(self):
        return self.lm.model

    @property
    def args(self):
        """The model's hyper-parameters (ModelArgs)."""
        return self.lm.args

    @property
    def cache(self):
        """The ExpertCache, or None (a dense model, or --mmap)."""
        return self.lm.cache

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_gguf(self.lm.gguf)

    @functools.cached_property
    def template(self) -> ChatTemplate:
        return ChatTemplate.from_gguf(self.lm.gguf)

    @functools.cached_property
    def grammar(self) -> GrammarCompiler:
        """Compiles grammars for constrained requests (EngineRequest.constraint) on this model's vocabulary."""
        compiler = GrammarCompiler(self.tokenizer, self.model.vocab_size)
        self.scheduler.grammar = compiler
        return compiler

    def encode_chat(self, messages: list[dict], **template_vars) -> list[int]:
        """Prompt ids for a conversation, through the model's chat template (message text never becomes control
        tokens: tokenizer/prompt.py); `template_vars` (tools=..., enable_thinking=...) are the template's."""
        return encode_chat(self.tokenizer, self.template, messages, **template_vars)

    # ---- running it ------------------------------------------------------------------------------------------

    def generate(self, prompt: list[int], params: SamplingParams, max_new_tokens: int,
                 stop_ids: frozenset[int] = frozenset()) -> Iterator[TokenEvent]:
        """Stream one request's tokens, stepping the scheduler in this thread; counted in `summary()`."""
        for i, event in enumerate(generate(self.scheduler, prompt, params, max_new_tokens, stop_ids)):
            self._meter.lap() if i else self._meter.start()  # per decode step: from one token to the next
            if event.stats is not None:
                self._prompt_tokens += event.stats.prompt_tokens
                self._prefill_seconds += event.stats.prefill_seconds
            yield event

    def summary(self) -> dict:
        """The run summary of every generate() so far: speed, cache, I/O, memory (report.py)."""
        return run_summary(self.lm, self._prompt_tokens, self._prefill_seconds, self._meter) | self._draft_summary(
            self.scheduler) | shard_summary(self.lm.sharding, self.lm.cache)

    def shard_ranks(self) -> list[dict]:
        """Per-rank counters of an expert-sharded run as last reported (no message sent; [] unsharded)."""
        return shard_summary(self.lm.sharding, self.lm.cache, refresh=False).get("shard_ranks", [])

    @property
    def fault(self) -> str | None:
        """Why this engine cannot compute any more (an expert rank failed: /health says so), or None."""
        return self.lm.fault

    def _draft_summary(self, sched: Scheduler) -> dict:
        """Speculative decoding: the mode, tokens drafted, and the share of them the model kept."""
        return {"draft": self.config.draft, "draft_tokens_proposed": sched.drafted,
                "draft_tokens_accepted": sched.accepted,
                "draft_acceptance": sched.accepted / sched.drafted if sched.drafted else 0.0}

    def bench(self, n_prompt: int, n_decode: int, seed: int, warmup: bool = True) -> dict:
        """Prefill a random `n_prompt`-token prompt in one step, then time `n_decode` decode steps sampling at
        temperature 1 (so routing varies as in real use); the run summary of those, with the seed and the decode
        time spent outside native kernels. `warmup` first reads every expert into the cache when the budget holds
        them all (the regime "experts in RAM" that llama.cpp's page cache gives it), then runs the same shape once
        on another random prompt, untimed (as llama-bench does), so one-time costs (first reads, packing, buffer
        growth) are not counted; the summary's cache and I/O counters cover all of it."""
        if n_prompt < 1 or n_decode < 1:
            raise ConfigError(f"bench needs at least one prompt and one decode token, got {n_prompt} and {n_decode}")
        if n_prompt + n_decode > self.context_length:
            raise ConfigError(f"bench -p {n_prompt} -n {n_decode} needs {n_prompt + n_decode} tokens of context, but "
                              f"the context holds {self.context_length} (the model's {self.lm.args.context_length}; "
                              "-c sets it): lower -p or -n")
        if warmup:
            self._preload()
            self._bench_run(n_prompt, min(n_decode, 4), seed + 1)
        prefill, meter, native0, sched = self._bench_run(n_prompt, n_decode, seed)
        result = run_summary(self.lm, n_prompt, prefill, meter) | self._draft_summary(sched) | shard_summary(
            self.lm.sharding, self.lm.cache)
        result["seed"], result["warmup"] = seed, warmup
        # decode time outside the native kernels: torch attention/norms/router, Python, and waiting on reads
        result["outside_native_us_per_token"] = 1e6 * (meter.steps.total - (NativeClock.seconds - native0)) / n_decode
        return result

    def _preload(self) -> None:
        cache = self.cache
        if cache is None or not cache.holds_all:
            return
        n = len(cache.store.layers)
        with tqdm(total=n, unit="layer", desc="reading every expert", disable=not self.config.progress) as bar:
            cache.preload(on_layer=lambda layer: bar.update(1))

    def _bench_run(self, n_prompt: int, n_decode: int, seed: int) -> tuple[float, StepMeter, float, Scheduler]:
        """(prefill seconds, decode step meter, NativeClock at the first decode step, the scheduler)."""
        prompt = torch.randint(0, self.model.vocab_size, (n_prompt,), generator=torch.Generator().manual_seed(seed))
        # a scheduler sized for this run: the whole prompt in one step, the context just long enough
        sched = Scheduler(self.model, n_prompt + n_decode + 1, 1, 1, n_prompt, draft=self.config.draft,
                          draft_tokens=self.config.draft_tokens, draft_model=self._draft_model)
        params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        events = drive(sched, request(prompt.tolist(), params, n_decode + 1))
        t0 = time.perf_counter()
        next(events)
        prefill = time.perf_counter() - t0
        meter, native0 = StepMeter(self.cache), NativeClock.seconds
        for _ in events:
            meter.lap()
        return prefill, meter, native0, sched

    def record_routing(self, out: IO[str], ahead: int = 0) -> RoutingRecorder:
        """Write a routing-trace header to `out`, then record every MoE layer's routing of every step there
        (engine/trace.py); call `new_sequence()` on the recorder before each prompt."""
        out.write(json.dumps(trace_header(self.lm, ahead)) + "\n")
        return RoutingRecorder(self.model, out, ahead)


def check_same_vocabulary(target: LoadedModel, draft: LoadedModel) -> None:
    """A draft model must speak the target's token ids: the same vocabulary size and, where both files carry a
    tokenizer, the same tokens."""
    if draft.model.vocab_size != target.model.vocab_size:
        raise ConfigError(f"--draft-model {draft.path.name} has a vocabulary of {draft.model.vocab_size} tokens, "
                          f"{target.path.name} {target.model.vocab_size}: a draft model needs the same vocabulary")
    ours, theirs = target.gguf.get("tokenizer.ggml.tokens"), draft.gguf.get("tokenizer.ggml.tokens")
    if ours and theirs and ours != theirs:
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        raise ConfigError(f"--draft-model {draft.path.name} has other tokens than {target.path.name} (token {first}: "
                          f"{theirs[first]!r} against {ours[first]!r}): a draft model needs the same vocabulary")
