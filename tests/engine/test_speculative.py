"""Speculative decoding (--draft ngram): at temperature 0 the tokens are exactly plain decoding's, alone and batched,
on the tiny models and the embedded default model, with drafts actually proposed and kept; when sampling, each
verified position is distributed as plain sampling's (checked on the rejection rule itself); drafts never run past
max_new_tokens, a stop token or the context; the prompt-lookup index agrees with a brute-force scan."""

from __future__ import annotations

import random

import pytest
import torch

from moestream.assets import default_model_path
from moestream.engine import GREEDY, Engine, EngineConfig, SamplingParams, Scheduler
from moestream.engine.drafting import NgramDrafter
from moestream.engine.sampling import Sampler
from moestream.errors import ConfigError
from tests.engine.test_scheduler import collect
from tests.fixtures.tiny_models import gguf_path

REPEATS = [1, 17, 33, 5, 200, 31, 8, 17, 33, 5, 200, 31, 8, 17, 33]  # text that repeats itself: drafts match
PROMPTS = [REPEATS, [1, 99, 64, 99, 64, 99], [1, 12, 7, 150, 3, 41, 22, 90, 8]]


def engine(path, draft: str) -> Engine:
    return Engine.open(path, EngineConfig(context_length=96, progress=False, draft=draft))


def brute_force(tokens: list[int], limit: int, max_ngram: int = 3) -> list[int]:
    for n in range(min(max_ngram, len(tokens) - 1), 0, -1):
        suffix = tokens[-n:]
        for end in range(len(tokens) - 1, n - 1, -1):  # latest occurrence ending before the last token
            if tokens[end - n:end] == suffix:
                return tokens[end:end + limit]
    return []


def test_prompt_lookup_matches_a_brute_force_scan():
    rng = random.Random(3)
    for _ in range(50):
        drafter, tokens = NgramDrafter(), [rng.randrange(6) for _ in range(3)]
        for _ in range(40):
            limit = rng.randrange(0, 6)
            expect = brute_force(tokens, limit) if limit and len(tokens) >= 2 else []
            assert drafter.propose(tokens, limit) == expect, tokens
            tokens += [rng.randrange(6) for _ in range(rng.randrange(1, 4))]  # accepted draft + one more token
    assert NgramDrafter().propose([5, 6, 7, 8], 4) == []  # nothing repeats: no draft


def test_guessing_backs_off_after_rejections_and_grows_after_hits():
    drafter, tokens = NgramDrafter(max_length=8), list(range(10)) * 3  # a repeat of 10 tokens to copy
    assert len(drafter.propose(tokens, 8)) == 8
    drafter.feedback(8, 0)  # all rejected: no guesses for 2 steps, then one at a time
    assert drafter.propose(tokens, 8) == [] and drafter.propose(tokens, 8) == []
    assert len(drafter.propose(tokens, 8)) == 1
    drafter.feedback(1, 0)  # rejected again: 4 steps without
    assert [drafter.propose(tokens, 8) for _ in range(4)] == [[]] * 4
    drafter.feedback(0, 0)  # nothing proposed: nothing learned
    assert len(drafter.propose(tokens, 8)) == 1
    drafter.feedback(1, 1)  # kept in full: twice as long next time, up to the most allowed
    assert len(drafter.propose(tokens, 8)) == 2
    drafter.feedback(2, 2)
    drafter.feedback(4, 4)
    assert len(drafter.propose(tokens, 8)) == 8
    drafter.feedback(8, 3)  # partly kept: one more than what was kept
    assert len(drafter.propose(tokens, 8)) == 4


@pytest.mark.parametrize("arch", ["mixtral", "qwen3moe"])
def test_greedy_output_is_identical_with_drafts(arch):
    path = gguf_path(arch, "q8_0")
    with engine(path, "off") as plain, engine(path, "ngram") as spec:
        for prompt in PROMPTS:
            want = [e.token for e in plain.generate(prompt, GREEDY, 40)]
            assert [e.token for e in spec.generate(prompt, GREEDY, 40)] == want
        summary = spec.summary()
    assert summary["draft_tokens_proposed"] > 0 and summary["draft_tokens_accepted"] > 0, summary
    assert summary["decode_tokens"] == 3 * 39  # every token after the first of each request is a decode token


def test_batched_greedy_with_drafts_gives_each_its_solo_tokens():
    path = gguf_path("mixtral", "q8_0")
    with engine(path, "ngram") as spec, engine(path, "off") as plain:
        solo = [[e.token for e in plain.generate(p, GREEDY, 24)] for p in PROMPTS]
        sched = Scheduler(spec.model, 96, max_batch=3, draft="ngram")
        assert collect(sched, PROMPTS, n=24) == solo
        assert sched.accepted > 0


def test_the_embedded_model_decodes_identically_with_drafts():
    path = default_model_path()
    with engine(path, "off") as plain, engine(path, "ngram") as spec:
        prompt = plain.encode_chat([{"role": "user", "content": "Repeat after me: the cat sat on the mat. "
                                                                 "The cat sat on the mat."}])
        want = [e.token for e in plain.generate(prompt, GREEDY, 48)]
        assert [e.token for e in spec.generate(prompt, GREEDY, 48)] == want


def test_drafts_stop_at_max_tokens_and_at_stop_tokens():
    path = gguf_path("mixtral", "q8_0")
    with engine(path, "ngram") as spec, engine(path, "off") as plain:
        want = [e.token for e in plain.generate(REPEATS, GREEDY, 30)]
        for n in (1, 2, 5, 13):
            events = list(spec.generate(REPEATS, GREEDY, n))
            assert [e.token for e in events] == want[:n] and events[-1].finish_reason == "length"
        stop = want[9]
        events = list(spec.generate(REPEATS, GREEDY, 30, stop_ids=frozenset({stop})))
        assert [e.token for e in events] == want[:want.index(stop) + 1] and events[-1].finish_reason == "stop"


def test_verify_samples_the_target_distribution():
    """Rejection against a one-token proposal: the kept-or-redrawn token is distributed as plain sampling's."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    params = SamplingParams(temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    target = torch.softmax(logits / 0.9, dim=-1)
    for guess in (0, 4):  # a likely and an unlikely guess
        sampler, counts = Sampler(params), torch.zeros(6)
        kept = 0
        for _ in range(20000):
            token, ok = sampler.verify(logits, [], guess)
            counts[token] += 1
            kept += ok
            assert ok == (token == guess)
        assert (counts / 20000 - target).abs().max() < 0.012, (guess, counts / 20000, target)
        assert abs(kept / 20000 - float(target[guess])) < 0.012


def test_sampling_with_drafts_runs_and_keeps_some():
    path = gguf_path("mixtral", "q8_0")
    with engine(path, "ngram") as spec:
        params = SamplingParams(temperature=0.3, seed=1)
        events = list(spec.generate(REPEATS, params, 40))
        assert len(events) == 40 and all(0 <= e.token < spec.model.vocab_size for e in events)


def test_bad_draft_settings_are_config_errors():
    with pytest.raises(ConfigError, match="--draft"):
        EngineConfig(draft="model")
    for n in (0, 16):
        with pytest.raises(ConfigError, match="--draft-tokens"):
            EngineConfig(draft="ngram", draft_tokens=n)
