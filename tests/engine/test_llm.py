"""The Engine facade: EngineConfig refuses bad values with ConfigError; Engine.open wires model, scheduler, cache
and defaults as configured; generate through the scheduler gives exactly the tokens of the plain decode loop it
replaced (prefill in chunks, then one forward pass and one sampler call per token), greedy and seeded, stopping
included; bench measures through the same step, deterministically under a seed."""

from __future__ import annotations

from collections import Counter

import os
import subprocess
import sys

import pytest
import torch

from moestream.engine import GREEDY, CacheConfig, Engine, EngineConfig, SamplingParams
from moestream.engine.sampling import Sampler
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.errors import ConfigError, MoestreamError
from moestream.kernels.cpu import default_threads
from tests.fixtures.tiny_models import gguf_path

PROMPT = [1, 17, 33, 5, 200, 31, 8, 99, 64, 12, 7]
SAMPLED = SamplingParams(temperature=1.0, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.2, seed=5)


@torch.inference_mode()
def reference_generate(model, prompt: list[int], params: SamplingParams, n: int, ctx: int, chunk: int,
                       stop: frozenset[int] = frozenset()) -> list[int]:
    """The decode loop engine/generate.py ran before it drove the scheduler: the prompt in `chunk`-token forward
    passes, then sample, append, stop or feed the token back."""
    seq = new_sequence(model, prompt, ctx)
    for i in range(0, len(prompt), chunk):
        logits = forward_logits(model, seq, prompt[i:i + chunk])
    sampler, out = Sampler(params), []
    for _ in range(n):
        token = sampler(logits, seq.tokens)
        seq.tokens.append(token)
        out.append(token)
        if token in stop or len(seq.tokens) >= ctx:
            break
        logits = forward_logits(model, seq, [token])
    return out


def open_engine(arch: str = "mixtral", **fields) -> Engine:
    return Engine.open(gguf_path(arch), EngineConfig(progress=False, **fields))


@pytest.fixture(scope="module")
def engine():
    with open_engine(context_length=64, prefill_chunk=4) as e:
        yield e


@pytest.mark.parametrize("fields, flag", [
    ({"threads": 0}, "--threads"), ({"threads": 1.5}, "--threads"), ({"threads": True}, "--threads"),
    ({"context_length": 1}, "--ctx-size"), ({"max_batch": 0}, "--max-batch"), ({"max_queue": -1}, "--max-queue"),
    ({"prefill_chunk": 0}, "--prefill-chunk"), ({"cache": "8GiB"}, "CacheConfig"),
])
def test_engine_config_refuses_bad_values(fields, flag):
    with pytest.raises(ConfigError, match=flag):
        EngineConfig(**fields)


def test_engine_config_defaults_are_valid_and_frozen():
    config = EngineConfig()
    assert config.cache == CacheConfig() and config.threads is None and config.context_length is None
    with pytest.raises(AttributeError):
        config.max_batch = 2  # type: ignore[misc]


def test_open_wires_the_configuration():
    with open_engine(context_length=48, max_batch=3, max_queue=5, prefill_chunk=7, threads=1) as e:
        s = e.scheduler
        assert (e.context_length, s.context_length, s.max_batch, s.max_waiting, s.prefill_tokens) == (48, 48, 3, 5, 7)
        assert e.model.compute.threads == 1 and e.cache is not None
        assert e.tokenizer.vocab_size == e.model.vocab_size
    with open_engine() as e:  # defaults: the model's context, at most 4096; one thread per physical core
        assert e.context_length == min(e.args.context_length, 4096)
        assert e.model.compute.threads == default_threads()


def test_open_refuses_a_missing_file(tmp_path):
    with pytest.raises(MoestreamError, match="no such file"):
        Engine.open(tmp_path / "missing.gguf", EngineConfig(progress=False))


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "seeded"])
def test_generate_equals_the_plain_decode_loop(engine, params):
    ours = [e.token for e in engine.generate(PROMPT, params, 20)]
    assert ours == reference_generate(engine.model, PROMPT, params, 20, ctx=64, chunk=4)


def test_generate_stops_where_the_plain_loop_stops(engine):
    free = reference_generate(engine.model, PROMPT, GREEDY, 20, ctx=64, chunk=4)
    stop = frozenset({free[5]})
    events = list(engine.generate(PROMPT, GREEDY, 20, stop))
    assert [e.token for e in events] == reference_generate(engine.model, PROMPT, GREEDY, 20, 64, 4, stop)
    assert events[-1].finish_reason == "stop" and events[-1].stats.generated_tokens == len(events)
    at_context = list(engine.generate(PROMPT, GREEDY, 1000))  # the context (64) ends it
    assert len(PROMPT) + len(at_context) == 64 and at_context[-1].finish_reason == "length"
    assert [e.finish_reason for e in at_context[:-1]] == [None] * (len(at_context) - 1)


def test_interleaved_generators_share_steps_and_equal_each_alone(engine):
    second = [1, 300, 301, 302]
    a, b = engine.generate(PROMPT, SAMPLED, 10), engine.generate(second, GREEDY, 10)
    together = list(zip(*((x.token, y.token) for x, y in zip(a, b))))
    assert list(together[0]) == [e.token for e in engine.generate(PROMPT, SAMPLED, 10)]
    assert list(together[1]) == [e.token for e in engine.generate(second, GREEDY, 10)]


def test_generate_refuses_prompts_that_cannot_run(engine):
    with pytest.raises(ConfigError, match="empty prompt"):
        list(engine.generate([], GREEDY, 4))
    with pytest.raises(ConfigError, match="context holds 64"):
        list(engine.generate(list(range(1, 65)), GREEDY, 4))
    assert list(engine.generate(PROMPT, GREEDY, 0)) == []
    assert engine.scheduler.load == (0, 0)


def test_summary_counts_each_generate(engine):
    before = engine.summary()
    list(engine.generate(PROMPT, GREEDY, 5))
    after = engine.summary()
    assert after["prompt_tokens"] - before["prompt_tokens"] == len(PROMPT)
    assert after["decode_tokens"] - before["decode_tokens"] == 4  # the first token comes from the prefill
    assert after["lookups"] > before["lookups"]


def test_bench_measures_through_the_step_and_is_seeded():
    runs = []
    for seed in (3, 3, 4):
        with open_engine() as e:
            runs.append(e.bench(9, 5, seed))
    first, again, other = runs
    assert (first["prompt_tokens"], first["decode_tokens"], first["seed"]) == (9, 5, 3)
    assert first["decode_tps"] > 0 and first["prefill_tps"] > 0 and "outside_native_us_per_token" in first
    assert first["routing_counts"] == again["routing_counts"] != other["routing_counts"]
    a = e.args  # the warm-up read every expert (they all fit)
    assert first["cache_allocated_bytes"] == a.n_layers * a.n_experts * first["slot_bytes"]


def test_preload_reads_every_expert_without_counting_it_as_routing():
    with open_engine() as e:
        list(e.generate([1, 5, 9], GREEDY, 3))
        routed, cache = Counter(e.cache.stats.routed), e.cache
        assert cache.holds_all and cache.resident_experts < e.args.n_layers * e.args.n_experts
        cache.preload()
        assert cache.resident_experts == e.args.n_layers * e.args.n_experts
        assert cache.stats.routed == routed
    with open_engine() as e, pytest.raises(ConfigError):
        e.bench(0, 5, 0)


def test_default_threads_counts_the_cores_this_process_may_use():
    code = "import os; from moestream.kernels.cpu import default_threads as d; os.sched_setaffinity(0, {0}); print(d())"
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert one.stdout.strip() == "1", one.stderr
    assert 1 <= default_threads() <= len(os.sched_getaffinity(0))


def test_engines_on_three_threads_at_once_give_their_solo_tokens():
    # The native steps share process-wide state (the kernel thread pool, the attention workspace behind a lock);
    # a second caller thread must neither corrupt nor change anyone's result.
    import threading

    from moestream.assets import default_model_path

    def run(out: dict, i: int) -> None:
        with Engine.open(default_model_path(), EngineConfig(progress=False)) as engine:
            ids = engine.tokenizer.encode("It was a fine morning, and")
            out[i] = [ev.token for ev in engine.generate(ids, SamplingParams(temperature=0.0), 40)]

    solo: dict = {}
    run(solo, 0)
    together: dict = {}
    threads = [threading.Thread(target=run, args=(together, i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert together == {0: solo[0], 1: solo[0], 2: solo[0]}
