"""Continuous batching: one engine thread owns the model; requests join and leave the running batch between steps.

Each step is one forward pass over every running sequence: a slice of prompt for sequences still in prefill (at
most `prefill_tokens` in all, oldest first) and one token for each decoding sequence. The MoE layers group the
whole step's tokens by expert, so an expert routed by several sequences is fetched and applied once per step.

Requests are submitted and cancelled from any thread; results go back through each request's `on_event`, called
on the engine thread (it must not block: the server hands events to its event loop).

This step is the only decode loop: the server's engine thread drives it through `run()`, and everything else
(`moestream generate`, `chat`, `trace`, `bench`, Engine.generate) submits a request and calls `step()` in its own
thread until the request ends (engine/generate.py), so batching, sampling and stopping rules exist once. A
request is checked when it is submitted (an empty prompt would never be ready to sample; one as long as the
context would overflow its KV cache), not when it is admitted, so the caller gets the error, not the batch.

Speculative decoding (`draft="ngram"`, engine/drafting.py): a decoding sequence may feed its last token plus a few
guessed ones; the step's logits for all of them verify the guesses (Sampler.verify: the same tokens as plain
decoding at temperature 0, the same distribution when sampling), the kept ones and one more token are emitted in
that step, and the KV rows of the rejected guesses are dropped. Everything else in the step is unchanged: the
guesses are just more tokens of that sequence's segment, batched with everyone else's."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError, MoestreamError, QueueFull, SchedulerClosed
from ..models.decoder import DecoderModel
from .drafting import DRAFT_TOKENS, Drafter, make_drafter
from .grammar import Constraint, GrammarCompiler, apply_mask
from .prompt_cache import PromptCache
from .sampling import Sampler, SamplingParams
from .sequence import Sequence, forward, new_sequence

# Engine defaults (EngineConfig and the CLI flags take theirs from here)
MAX_BATCH = 8  # sequences per step
MAX_WAITING = 64  # requests queued for a slot before QueueFull
PREFILL_CHUNK = 512  # prompt tokens per step, over all prefilling sequences


@dataclass
class TokenOut:
    """One generated token, or the end of a request (finish_reason set; token None when nothing was generated)."""

    token: int | None
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None  # the most likely tokens at this step, (id, logprob)
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    exception: BaseException | None = None  # finish_reason "error": what was raised, for callers that re-raise it
    cached_tokens: int = 0  # prompt tokens whose KV rows came from the prompt cache


@dataclass
class EngineRequest:
    prompt: list[int]
    params: SamplingParams
    max_new_tokens: int
    on_event: Callable[[TokenOut], None]
    stop_ids: frozenset[int] = frozenset()
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's only
    constraint: Constraint | None = None  # a grammar the output must follow (engine/grammar.py)
    cancelled: bool = False  # set from any thread, seen at the next step


@dataclass
class _Slot:
    req: EngineRequest
    seq: Sequence
    sampler: Sampler
    fed: int = 0  # tokens of seq.tokens already in the KV cache
    generated: int = 0
    drafter: Drafter | None = None
    draft: list[int] | None = None  # tokens guessed after seq.tokens, fed this step to be verified
    cached: int = 0  # prompt tokens restored from the prompt cache


@dataclass
class StepInfo:
    seconds: float
    sequences: int
    tokens: int


class Scheduler:
    def __init__(self, model: DecoderModel, context_length: int, max_batch: int = MAX_BATCH,
                 max_waiting: int = MAX_WAITING, prefill_tokens: int = PREFILL_CHUNK,
                 on_step: Callable[[StepInfo], None] | None = None, draft: str = "off",
                 draft_tokens: int = DRAFT_TOKENS, draft_model: DecoderModel | None = None,
                 grammar: GrammarCompiler | None = None, prompt_cache: PromptCache | None = None):
        self.model, self.context_length, self.grammar = model, context_length, grammar
        self.prompt_cache = prompt_cache
        self.draft, self.draft_tokens, self.draft_model = draft, draft_tokens, draft_model
        make_drafter(draft, draft_tokens, draft_model, context_length)  # a bad mode fails here, not at a request
        self.drafted = self.accepted = 0  # speculative decoding: tokens proposed, and proposed then kept
        self.max_batch, self.max_waiting, self.prefill_tokens = max_batch, max_waiting, prefill_tokens
        self.on_step = on_step
        self._waiting: deque[EngineRequest] = deque()
        self._running: list[_Slot] = []
        self._wake = threading.Condition()
        self._closed = False  # set once run() has ended: a request submitted later would wait forever
        self._tasks: deque[Callable[[], None]] = deque()  # run on the engine thread between two steps

    # ---- any thread ------------------------------------------------------------------------------------------

    def submit(self, req: EngineRequest) -> None:
        """Queue `req`; raises ConfigError for a prompt that cannot run, QueueFull, or SchedulerClosed."""
        self._check(req.prompt)
        if req.constraint is not None and self.grammar is None:
            raise ConfigError("this scheduler has no grammar compiler for constrained requests")
        if req.max_new_tokens < 1:  # nothing to generate: done without a forward pass
            req.on_event(TokenOut(None, finish_reason="length", prompt_tokens=len(req.prompt)))
            return
        with self._wake:
            if self._closed:
                raise SchedulerClosed("the engine has stopped and takes no more requests")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests already waiting")
            self._waiting.append(req)
            self._wake.notify()

    def _check(self, prompt: list[int]) -> None:
        if not prompt:
            raise ConfigError("cannot generate from an empty prompt")
        if len(prompt) >= self.context_length:
            raise ConfigError(f"the prompt has {len(prompt)} tokens but the context holds {self.context_length}; "
                              "shorten it or raise --ctx-size")

    def between_steps(self, task: Callable[[], None]) -> None:
        """Run `task()` on the engine thread before its next step (settings that a step must not see change
        halfway: batch limits, the cache budget, prefetch). Its exceptions are the caller's to catch."""
        with self._wake:
            self._tasks.append(task)
            self._wake.notify()

    def cancel(self, req: EngineRequest) -> None:
        req.cancelled = True
        with self._wake:
            self._wake.notify()

    @property
    def load(self) -> tuple[int, int]:
        """(running, waiting)."""
        return len(self._running), len(self._waiting)

    def run(self, stop: threading.Event, until: Callable[[], bool] | None = None) -> None:
        """The engine thread's loop: step while there is work, sleep otherwise; on stop, cancel what is left.
        until() true (checked between steps) returns with nothing cancelled (a server switching models)."""
        with torch.inference_mode():
            while not stop.is_set():
                self._run_tasks()
                if until is not None and until():
                    return
                with self._wake:
                    if not self._running and not self._waiting and not self._tasks:
                        self._wake.wait(timeout=0.1)
                        continue
                self.step()
        self._finish_all("cancelled", None)

    def _run_tasks(self) -> None:
        while self._tasks:
            self._tasks.popleft()()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # ---- engine thread ---------------------------------------------------------------------------------------

    def step(self) -> None:
        self._drop_cancelled()  # first, so that a freed slot is taken in this same step
        self._admit()
        if not self._running:
            return
        t0 = time.perf_counter()
        work = self._plan()
        try:
            logits = self._forward(work)
        except Exception as exc:  # a failed read or kernel: fail this batch, keep serving
            error = str(exc) if isinstance(exc, MoestreamError) else f"{type(exc).__name__}: {exc}"
            self._finish_running("error", error, exc)
            return
        self._mask(work, logits)
        for (slot, n), rows in zip(work, logits):
            slot.fed += n
            if slot.req is None:  # ended by its grammar
                continue
            if rows is not None and slot.draft:
                self._verify(slot, rows)
            elif rows is not None:
                self._sample(slot, rows[0])
        self._running = [s for s in self._running if s.req is not None]
        if self.on_step:
            self.on_step(StepInfo(time.perf_counter() - t0, len(work), sum(n for _, n in work)))

    def _admit(self) -> None:
        with self._wake:
            while self._waiting and len(self._running) < self.max_batch:
                req = self._waiting.popleft()
                if req.cancelled:
                    req.on_event(TokenOut(None, finish_reason="cancelled"))
                    continue
                seq = new_sequence(self.model, req.prompt, self.context_length)
                cached = self.prompt_cache.restore(seq.kv, req.prompt) if self.prompt_cache else 0
                self._running.append(_Slot(req, seq, Sampler(req.params), fed=cached, drafter=self._drafter(),
                                           cached=cached))

    def _drop_cancelled(self) -> None:
        for slot in self._running:
            if slot.req.cancelled:
                self._end(slot, "cancelled")
        self._running = [s for s in self._running if s.req is not None]

    def _plan(self) -> list[tuple[_Slot, int]]:
        """(slot, tokens to feed this step): the whole unfed tail for decoding slots (1 token), prompt slices
        within the step's prefill budget for the others (a slot that gets none this step sits it out)."""
        budget, work = self.prefill_tokens, []
        for slot in self._running:
            unfed = len(slot.seq.tokens) - slot.fed
            n = unfed + self._propose(slot) if slot.generated else min(unfed, budget)
            if not slot.generated:
                budget -= n
            if n > 0:
                work.append((slot, n))
        return work

    def _mask(self, work: list[tuple[_Slot, int]], logits: list[torch.Tensor | None]) -> None:
        """Constrained slots about to sample: their grammars' masks, all computed in one parallel call, applied to
        their logits row in place (such slots feed no draft, so the row is the only one). A grammar that cannot go
        on ends its request with the reason, before a sample from nothing allowed."""
        rows = []
        for (slot, _), row in zip(work, logits):
            constraint = slot.req.constraint
            if row is None or constraint is None:
                continue
            if constraint.error:
                self._end(slot, "error", f"the output grammar failed: {constraint.error}")
                continue
            rows.append((constraint, row[0]))
        if rows:
            masks = self.grammar.fill([constraint for constraint, _ in rows])
            for (_, row), mask in zip(rows, masks):
                apply_mask(row, mask)

    def _drafter(self) -> Drafter | None:
        return make_drafter(self.draft, self.draft_tokens, self.draft_model, self.context_length)

    def _propose(self, slot: _Slot) -> int:
        """Draft tokens for a decoding slot (speculative decoding), within its token and context limits."""
        slot.draft = None
        if slot.drafter is None or slot.req.constraint is not None:  # a guess would need the grammar's mask too
            return 0
        room = min(self.draft_tokens, slot.req.max_new_tokens - slot.generated - 1,
                   self.context_length - len(slot.seq.tokens) - 1)
        slot.draft = slot.drafter.propose(slot.seq.tokens, room) if room > 0 else []
        self.drafted += len(slot.draft)
        return len(slot.draft)

    def _forward(self, work: list[tuple[_Slot, int]]) -> list[torch.Tensor | None]:
        """One forward pass over every slot's new tokens (a draft after them); logits [1 + draft, V] for slots whose
        input is complete."""
        inputs = [slot.seq.tokens + slot.draft if slot.draft else slot.seq.tokens for slot, _ in work]
        feeds = [(slot.seq.kv, tokens[slot.fed: slot.fed + n]) for (slot, n), tokens in zip(work, inputs)]
        ready = [i for i, (slot, n) in enumerate(work) if slot.fed + n == len(inputs[i])]
        counts = [1 + len(work[i][0].draft or ()) for i in ready]
        rows = forward(self.model, feeds, ready, counts).split(counts)
        out: list[torch.Tensor | None] = [None] * len(work)
        for i, row in zip(ready, rows):
            out[i] = row
        return out

    def _verify(self, slot: _Slot, rows: torch.Tensor) -> None:
        """Speculative decoding: keep the draft's tokens up to the first the model does not agree with (at temperature
        0 exactly the tokens plain decoding gives), then one token of the model's own; drop the KV rows of the rest.
        rows: logits [1 + draft, V], row i for the position after the i-th fed token."""
        draft, slot.draft = slot.draft, None
        start = kept = slot.fed - len(draft)  # KV rows of seq.tokens; each accepted guess adds one
        for i, row in enumerate(rows):
            if i < len(draft):
                token, ok = slot.sampler.verify(row, slot.seq.tokens, draft[i])
            else:
                token, ok = slot.sampler(row, slot.seq.tokens), False
            self._emit(slot, token, row)
            if not ok or slot.req is None:
                break
            kept += 1
            self.accepted += 1
        slot.drafter.feedback(len(draft), kept - start)
        slot.fed = kept
        slot.seq.kv.truncate(kept)

    def _sample(self, slot: _Slot, logits: torch.Tensor) -> None:
        self._emit(slot, slot.sampler(logits, slot.seq.tokens), logits)

    def _emit(self, slot: _Slot, token: int, logits: torch.Tensor) -> None:
        req = slot.req
        slot.seq.tokens.append(token)
        slot.generated += 1
        if req.constraint is not None and not self._advance(slot, token):
            return
        logprob, top = _logprobs(logits, token, req.top_logprobs)
        reason = self._finish_reason(slot, token)
        req.on_event(TokenOut(token, logprob, top, reason, None, len(req.prompt), slot.generated,
                              cached_tokens=slot.cached))
        if reason:
            self._keep(slot)
            slot.req = None  # type: ignore[assignment]  # done: removed after this step

    def _advance(self, slot: _Slot, token: int) -> bool:
        """Move the slot's grammar past `token`; a token it refuses (the mask allowed it: a bug) ends the request
        with the error, not the engine thread."""
        try:
            slot.req.constraint.accept(token)
        except MoestreamError as exc:
            self._end(slot, "error", str(exc), exc)
            return False
        return True

    def _finish_reason(self, slot: _Slot, token: int) -> str | None:
        if token in slot.req.stop_ids or (slot.req.constraint is not None and slot.req.constraint.finished):
            return "stop"
        if slot.generated >= slot.req.max_new_tokens or len(slot.seq.tokens) >= self.context_length:
            return "length"
        return None

    def _end(self, slot: _Slot, reason: str, error: str | None = None, exc: BaseException | None = None) -> None:
        req = slot.req
        req.on_event(TokenOut(None, finish_reason=reason, error=error, prompt_tokens=len(req.prompt),
                              completion_tokens=slot.generated, exception=exc, cached_tokens=slot.cached))
        if reason == "cancelled":
            self._keep(slot)
        slot.req = None  # type: ignore[assignment]

    def _keep(self, slot: _Slot) -> None:
        """A sequence that ended normally leaves its KV rows to the prompt cache (a failed step may have left
        its layers at different lengths, so those are not kept)."""
        if self.prompt_cache is not None and slot.seq.kv.length:
            self.prompt_cache.store(slot.seq.kv, slot.seq.tokens)

    def _finish_running(self, reason: str, error: str | None, exc: BaseException | None = None) -> None:
        for slot in self._running:
            if slot.req is not None:
                self._end(slot, reason, error, exc)
        self._running = []

    def _finish_all(self, reason: str, error: str | None) -> None:
        self._finish_running(reason, error)
        with self._wake:
            waiting, self._waiting, self._closed = list(self._waiting), deque(), True
        for req in waiting:
            req.on_event(TokenOut(None, finish_reason=reason, error=error))


def _logprobs(logits: torch.Tensor, token: int, top_n: int | None) -> tuple[float | None, list | None]:
    """The model's log-probabilities (before penalties and temperature), as OpenAI reports them."""
    if top_n is None:
        return None, None
    logp = torch.log_softmax(logits.float(), dim=-1)
    top = []
    if top_n:
        values, ids = torch.topk(logp, min(top_n, logp.shape[-1]))
        top = list(zip(ids.tolist(), values.tolist()))
    return float(logp[token]), top
