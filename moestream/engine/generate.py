"""Generation as a generator of events over the scheduler: submit one request, then drive `Scheduler.step()` in
the calling thread until it ends, yielding each token as its step produces it.

There is no decode loop here: `drive` only steps the scheduler, so a CLI run takes the very path a served request
takes (the same prefill chunks, the same sampler calls in the same order, the same stop rules), and its output is
what the server would answer for the same seed. Several generators over one scheduler may be alive at once; each
step advances all of them (events wait in their own queue). A generator left early cancels its request; the slot
is freed at the next step. A failed step re-raises what it raised here (the server turns it into an error event
instead), so `moestream generate` shows the same one-line error it always did."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import MoestreamError
from .sampling import SamplingParams
from .scheduler import EngineRequest, Scheduler, TokenOut


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str | None = None

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        # the first generated token comes from the prefill logits, so decode steps = generated - 1
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class TokenEvent:
    token: int
    finish_reason: str | None = None  # "stop" (end-of-generation token), "length" (max tokens or context)
    stats: GenerationStats | None = None


@torch.inference_mode()
def drive(scheduler: Scheduler, req: EngineRequest) -> Iterator[TokenOut]:
    """Submit `req` and step `scheduler` here until the request ends; yields its events, the last one carrying
    the finish reason."""
    events: deque[TokenOut] = deque()
    req.on_event = events.append
    scheduler.submit(req)
    try:
        while True:
            while not events:
                scheduler.step()
            ev = events.popleft()
            yield ev
            if ev.finish_reason:
                return
    finally:
        scheduler.cancel(req)  # a no-op once finished; frees the slot at the next step otherwise


def generate(scheduler: Scheduler, prompt: list[int], params: SamplingParams, max_new_tokens: int,
             stop_ids: frozenset[int] = frozenset()) -> Iterator[TokenEvent]:
    """One token per event; the last carries the finish reason and the run's timing statistics."""
    req = request(prompt, params, max_new_tokens, stop_ids)
    stats, t0 = GenerationStats(prompt_tokens=len(prompt)), time.perf_counter()
    for ev in drive(scheduler, req):
        _raise_failure(ev)
        now = time.perf_counter()
        if ev.token is None:  # ended before a token (nothing to generate, or cancelled)
            return
        if not stats.generated_tokens:
            stats.prefill_seconds, t0 = now - t0, now
        stats.generated_tokens += 1
        if ev.finish_reason:
            stats.decode_seconds, stats.finish_reason = now - t0, ev.finish_reason
        yield TokenEvent(ev.token, ev.finish_reason, stats if ev.finish_reason else None)


def request(prompt: list[int], params: SamplingParams, max_new_tokens: int,
            stop_ids: frozenset[int] = frozenset()) -> EngineRequest:
    """A request for `drive`, which installs its event handler."""
    return EngineRequest(list(prompt), params, max_new_tokens, on_event=_unset, stop_ids=frozenset(stop_ids))


def _unset(ev: TokenOut) -> None:
    raise AssertionError("drive() installs the request's event handler")


def _raise_failure(ev: TokenOut) -> None:
    if ev.finish_reason != "error":
        return
    if ev.exception is not None:
        raise ev.exception
    raise MoestreamError(ev.error or "the engine failed")
