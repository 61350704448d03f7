"""Continuous batching in-process: sequences batched together produce exactly what each produces alone; a step
fetches each expert once for all its sequences; cancelling frees the slot; a failed read fails only that batch."""

from __future__ import annotations

import threading

import pytest

from moestream.cache.config import CacheConfig
from moestream.engine.generate import generate
from moestream.engine.loader import load_model
from moestream.engine.sampling import GREEDY, SamplingParams
from moestream.engine.scheduler import EngineRequest, QueueFull, Scheduler
from moestream.store.reader import ThreadReader
from tests.cache.streaming_helpers import tight_budget
from tests.cache.test_faults import FailingFile, assert_pool_whole
from tests.fixtures.tiny_models import gguf_path

PROMPTS = [[1, 17, 33, 5, 200], [1, 99, 64], [1, 12, 7, 150, 3, 41, 22, 90, 8], [1, 5], [1, 300, 301, 302]]
N = 12


def collect(sched: Scheduler, prompts, params=GREEDY, n=N, **kw) -> list[list[int]]:
    """Submit every prompt (params: one for all, or a list, one per prompt), step until all finish; returns each
    request's tokens."""
    per_prompt = params if isinstance(params, list) else [params] * len(prompts)
    out = [[] for _ in prompts]
    done = [None] * len(prompts)

    def on_event(i):
        def f(ev):
            if ev.token is not None:
                out[i].append(ev.token)
            if ev.finish_reason:
                done[i] = ev.finish_reason
        return f

    for i, (p, sp) in enumerate(zip(prompts, per_prompt)):
        sched.submit(EngineRequest(list(p), sp, n, on_event(i), **kw))
    while any(d is None for d in done):
        sched.step()
    return out


@pytest.fixture(scope="module")
def tiny():
    lm = load_model(gguf_path("mixtral"), progress=False)
    yield lm
    lm.close()


def test_batched_greedy_equals_each_sequence_alone(tiny):
    alone = [[e.token for e in generate(tiny.model, p, GREEDY, N, context_length=64)] for p in PROMPTS]
    together = collect(Scheduler(tiny.model, 64, max_batch=8), PROMPTS)
    assert together == alone


def test_batched_sampling_equals_each_sequence_alone_with_seeds(tiny):
    params = [SamplingParams(temperature=1.0, seed=s) for s in range(len(PROMPTS))]
    alone = [[e.token for e in generate(tiny.model, p, sp, N, context_length=64)] for p, sp in zip(PROMPTS, params)]
    sched = Scheduler(tiny.model, 64, max_batch=2, prefill_tokens=4)  # joins and leaves mid-run, prompts in slices
    assert collect(sched, PROMPTS, params) == alone


def test_one_read_per_expert_per_step_under_a_tight_budget():
    path = gguf_path("mixtral")
    lm = load_model(path, progress=False, cache=CacheConfig(ram_budget=8 * tight_budget(path) // 2))
    try:
        before = lm.cache.stats.lookups
        alone = [[e.token for e in generate(lm.model, p, GREEDY, N, context_length=64)] for p in PROMPTS]
        alone_lookups, before = lm.cache.stats.lookups - before, lm.cache.stats.lookups
        sched = Scheduler(lm.model, 64, max_batch=8)
        assert collect(sched, PROMPTS) == alone
        assert lm.cache.stats.lookups - before < alone_lookups / 2  # shared experts are looked up once per step
        # one prefill step + N-1 decode steps; a lookup is one distinct expert of one layer in one step, so at
        # most n_experts per layer per step however many sequences route to it (alone: up to 5x as many)
        assert lm.cache.stats.lookups - before <= N * lm.args.n_layers * lm.args.n_experts
    finally:
        lm.close()


def test_cancel_frees_the_slot_and_queue_limit(tiny):
    sched = Scheduler(tiny.model, 64, max_batch=1, max_waiting=1)
    events = []
    req = EngineRequest([1, 2, 3], GREEDY, 40, events.append)
    sched.submit(req)
    sched.step()
    sched.submit(EngineRequest([1, 4], GREEDY, 2, lambda ev: None))
    with pytest.raises(QueueFull):
        sched.submit(EngineRequest([1, 5], GREEDY, 2, lambda ev: None))
    sched.cancel(req)
    sched.step()
    assert events[-1].finish_reason == "cancelled" and len(events) < 40
    assert sched.load == (1, 0)  # the waiting request took the freed slot


def test_failed_read_fails_the_batch_and_the_server_goes_on():
    path = gguf_path("mixtral")
    reader = ThreadReader(FailingFile(path, 3), depth=4)
    lm = load_model(path, progress=False, cache=CacheConfig(ram_budget=tight_budget(path), chunk_bytes=8192),
                    reader=reader)
    try:
        sched = Scheduler(lm.model, 64, max_batch=4)
        reasons = []
        for p in PROMPTS[:2]:
            sched.submit(EngineRequest(p, GREEDY, N, lambda ev: ev.finish_reason and reasons.append(ev)))
        while len(reasons) < 2:
            sched.step()
        assert [r.finish_reason for r in reasons] == ["error", "error"] and "Input/output error" in reasons[0].error
        assert_pool_whole(lm.cache)
        alone = [e.token for e in generate(lm.model, PROMPTS[0], GREEDY, N, context_length=64)]
        assert collect(sched, [PROMPTS[0]]) == [alone]
    finally:
        lm.close()


def test_run_loop_cancels_everything_on_stop(tiny):
    sched = Scheduler(tiny.model, 64, max_batch=2)
    stop, finished = threading.Event(), []
    for p in PROMPTS:
        sched.submit(EngineRequest(p, GREEDY, 60, lambda ev: ev.finish_reason and finished.append(ev.finish_reason)))
    stop.set()
    t = threading.Thread(target=sched.run, args=(stop,))
    t.start()
    t.join(30)
    assert not t.is_alive() and sorted(finished) == ["cancelled"] * len(PROMPTS)
