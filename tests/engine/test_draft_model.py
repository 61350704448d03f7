"""Speculative decoding with a draft model (--draft-model): at temperature 0 the output is exactly plain
decoding's, whether the draft is the target's own file in another quant type (nearly every guess kept) or another
model with the same vocabulary (many guesses rejected), alone and batched; when sampling it runs; a draft model
with another vocabulary is refused with one line naming both files."""

from __future__ import annotations

import pytest

from moestream.engine import GREEDY, Engine, EngineConfig, SamplingParams, Scheduler
from moestream.errors import ConfigError
from tests.cli.test_bad_input import run_cli
from tests.engine.test_scheduler import collect
from tests.engine.test_speculative import PROMPTS
from tests.fixtures.tiny_models import gguf_path


def engine(path, draft_model=None) -> Engine:
    return Engine.open(path, EngineConfig(context_length=96, progress=False, draft="model" if draft_model else "off",
                                          draft_model=str(draft_model) if draft_model else None))


@pytest.mark.parametrize("draft_arch,draft_type", [("qwen3moe", "f32"), ("qwen2moe", "q8_0")],
                         ids=["same-model-f32", "other-model"])
def test_greedy_output_is_identical_with_a_draft_model(draft_arch, draft_type):
    target = gguf_path("qwen3moe", "q8_0")
    with engine(target) as plain, engine(target, gguf_path(draft_arch, draft_type)) as spec:
        for prompt in PROMPTS:
            want = [e.token for e in plain.generate(prompt, GREEDY, 32)]
            assert [e.token for e in spec.generate(prompt, GREEDY, 32)] == want
        s = spec.summary()
    assert s["draft"] == "model" and s["draft_tokens_proposed"] > 0, s
    if draft_arch == "qwen3moe":  # the same weights, rounded otherwise: almost every guess is the target's token
        assert s["draft_acceptance"] > 0.8, s
    assert s["decode_tokens"] == 3 * 31


def test_batched_greedy_with_a_draft_model_gives_each_its_solo_tokens():
    target, draft = gguf_path("qwen3moe", "q8_0"), gguf_path("qwen2moe", "q8_0")
    with engine(target) as plain, engine(target, draft) as spec:
        solo = [[e.token for e in plain.generate(p, GREEDY, 20)] for p in PROMPTS]
        sched = Scheduler(spec.model, 96, max_batch=3, draft="model", draft_model=spec.draft.model)
        assert collect(sched, PROMPTS, n=20) == solo
        assert sched.drafted > 0


def test_sampling_with_a_draft_model_runs():
    with engine(gguf_path("qwen3moe", "q8_0"), gguf_path("qwen3moe", "f32")) as spec:
        events = list(spec.generate(PROMPTS[0], SamplingParams(temperature=0.7, seed=3), 30))
        assert len(events) == 30 and all(0 <= e.token < spec.model.vocab_size for e in events)
        assert spec.summary()["draft_tokens_accepted"] > 0


def test_a_draft_model_with_another_vocabulary_is_refused():
    with pytest.raises(ConfigError, match="vocabulary of 32000 tokens"):
        engine(gguf_path("qwen3moe", "q8_0"), gguf_path("mixtral", "q8_0"))
    with pytest.raises(ConfigError, match="other tokens|vocabulary of"):
        engine(gguf_path("qwen3moe", "q8_0"), gguf_path("glm4moe", "q8_0"))
    with pytest.raises(ConfigError, match="--draft is 'ngram'"):
        EngineConfig(draft="ngram", draft_model="x.gguf")


def test_generate_takes_a_draft_model_flag():
    result = run_cli("generate", "-m", str(gguf_path("qwen3moe", "q8_0")), "--draft-model",
                     str(gguf_path("qwen3moe", "f32")), "--temp", "0", "-n", "12", "-p", "Once upon a time")
    assert result.returncode == 0, result.stderr
    plain = run_cli("generate", "-m", str(gguf_path("qwen3moe", "q8_0")), "--temp", "0", "-n", "12",
                    "-p", "Once upon a time")
    assert result.stdout == plain.stdout and result.stdout.strip()
    bad = run_cli("generate", "-m", str(gguf_path("qwen3moe", "q8_0")), "--draft-model",
                  str(gguf_path("mixtral", "q8_0")), "-n", "4", "-p", "x")
    assert bad.returncode != 0 and "same vocabulary" in bad.stderr and "Traceback" not in bad.stderr
