import pytest
import torch

from moestream.engine.sampling import Sampler, SamplingParams, apply_penalties, filter_logits
from moestream.errors import ConfigError

LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, 3.0])


def kept(params: SamplingParams) -> list[int]:
    return torch.isfinite(filter_logits(LOGITS, params)).nonzero().flatten().tolist()


def test_greedy_takes_the_argmax():
    assert Sampler(SamplingParams(temperature=0)) (LOGITS, []) == 4


def test_top_k_keeps_the_k_best():
    assert kept(SamplingParams(top_k=2, top_p=1.0, min_p=0.0)) == [0, 4]


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.softmax(LOGITS, -1)  # sorted: 4 (.62), 0 (.23), 1 (.08), ...
    assert probs[4] < 0.7 < probs[4] + probs[0]
    assert kept(SamplingParams(top_k=0, top_p=0.7, min_p=0.0)) == [0, 4]
    assert kept(SamplingParams(top_k=0, top_p=0.5, min_p=0.0)) == [4]


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    assert kept(SamplingParams(top_k=0, top_p=1.0, min_p=0.2)) == [0, 4]


def test_repeat_penalty_follows_llama_cpp_sign_rule():
    out = apply_penalties(LOGITS.clone(), [0, 3], SamplingParams(repeat_penalty=2.0))
    assert out[0] == 1.0 and out[3] == -2.0 and out[4] == 3.0


def test_presence_and_frequency_penalties():
    out = apply_penalties(LOGITS.clone(), [1, 1, 2], SamplingParams(presence_penalty=0.5, frequency_penalty=0.25))
    assert out[1] == pytest.approx(1.0 - 0.5 - 0.5) and out[2] == pytest.approx(0.5 - 0.75)


def test_seed_makes_sampling_reproducible():
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
    a, b = Sampler(params), Sampler(params)
    assert [a(LOGITS, []) for _ in range(50)] == [b(LOGITS, []) for _ in range(50)]
    assert len(set(a(LOGITS, []) for _ in range(200))) > 1  # it does sample


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(min_p=2), dict(top_k=-1),
                                 dict(repeat_penalty=0), dict(presence_penalty=3)])
def test_invalid_parameters_are_rejected(bad):
    with pytest.raises(ConfigError):
        SamplingParams(**bad)


def test_sampling_follows_the_distribution():
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=5)
    sampler = Sampler(params)
    counts = torch.bincount(torch.tensor([sampler(LOGITS, []) for _ in range(4000)]), minlength=5).float()
    expected = torch.softmax(LOGITS, -1) * 4000
    assert ((counts - expected).abs() <= 4 * expected.sqrt() + 5).all(), (counts, expected)
