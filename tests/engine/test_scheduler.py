"""Continuous batching in-process: sequences batched together produce exactly what each produces alone (through
Engine.generate, one request at a time on the same step); a step fetches each expert once for all its sequences;
cancelling frees the slot; a failed read fails only that batch."""

from __future__ import annotations

import threading

import pytest

from moestream.engine import (GREEDY, CacheConfig, Engine, EngineConfig, EngineRequest, QueueFull, SamplingParams,
                              Scheduler)
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


def open_engine(path=None, cache=CacheConfig(), reader=None) -> Engine:
    config = EngineConfig(cache=cache, context_length=64, progress=False)
    return Engine.open(path or gguf_path("mixtral"), config, reader=reader)


def alone(engine: Engine, prompts, params=GREEDY, n=N) -> list[list[int]]:
    """Each prompt generated on its own, one after the other (params: one for all, or one per prompt)."""
    per_prompt = params if isinstance(params, list) else [params] * len(prompts)
    return [[e.token for e in engine.generate(p, sp, n)] for p, sp in zip(prompts, per_prompt)]


@pytest.fixture(scope="module")
def tiny():
    with open_engine() as engine:
        yield engine


def test_batched_greedy_equals_each_sequence_alone(tiny):
    together = collect(Scheduler(tiny.model, 64, max_batch=8), PROMPTS)
    assert together == alone(tiny, PROMPTS)


def test_batched_sampling_equals_each_sequence_alone_with_seeds(tiny):
    params = [SamplingParams(temperature=1.0, seed=s) for s in range(len(PROMPTS))]
    sched = Scheduler(tiny.model, 64, max_batch=2, prefill_tokens=4)  # joins and leaves mid-run, prompts in slices
    assert collect(sched, PROMPTS, params) == alone(tiny, PROMPTS, params)


def test_one_read_per_expert_per_step_under_a_tight_budget():
    path = gguf_path("mixtral")
    with open_engine(path, CacheConfig(ram_budget=8 * tight_budget(path) // 2)) as engine:
        stats = engine.cache.stats
        before = stats.lookups
        one_by_one = alone(engine, PROMPTS)
        alone_lookups, before = stats.lookups - before, stats.lookups
        assert collect(engine.scheduler, PROMPTS) == one_by_one
        assert stats.lookups - before < alone_lookups / 2  # shared experts are looked up once per step
        # one prefill step + N-1 decode steps; a lookup is one distinct expert of one layer in one step, so at
        # most n_experts per layer per step however many sequences route to it (alone: up to 5x as many)
        assert stats.lookups - before <= N * engine.args.n_layers * engine.args.n_experts


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
    with open_engine(path, CacheConfig(ram_budget=tight_budget(path), chunk_bytes=8192), reader) as engine:
        sched = engine.scheduler
        reasons = []
        for p in PROMPTS[:2]:
            sched.submit(EngineRequest(p, GREEDY, N, lambda ev: ev.finish_reason and reasons.append(ev)))
        while len(reasons) < 2:
            sched.step()
        assert [r.finish_reason for r in reasons] == ["error", "error"] and "Input/output error" in reasons[0].error
        assert "Input/output error" in str(reasons[0].exception)  # kept, so a caller in this thread re-raises it
        assert_pool_whole(engine.cache)
        assert collect(sched, [PROMPTS[0]]) == alone(engine, [PROMPTS[0]])


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
