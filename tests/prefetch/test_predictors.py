"""Predictors: the lookahead's per-step chance, history learning a transition, thresholds; and on the embedded
default model, the live prefetcher's precision and recall per layer equal the offline replay of the same trace."""

from __future__ import annotations

import json

import pytest
import torch

from moestream.engine.simulation import PrefetchSpec, prefetch_plan
from moestream.engine.trace import read_trace
from moestream.errors import ConfigError
from moestream.prefetch.predictors import History, Lookahead, choose, make_predictor, token_union
from tests.cli.test_bad_input import run_cli


def test_token_union_is_the_chance_that_any_token_routes_there():
    probs = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])  # [T=2, E=4], top-2 per token
    got = token_union(probs, k=2)
    # token 0: e0 min(1, 1.2) = 1, e1 0.6; token 1: e3 0.8, e2 0.6; no token has e1 and e2 both
    assert torch.allclose(got, torch.tensor([1.0, 0.6, 0.6, 0.8]))
    assert choose(got, 0.7, 4) == [0, 3] and choose(got, 0.0, 2) == [0, 3]
    assert choose(torch.zeros(4), 0.0, 4) == []  # a zero score is never a prediction


def test_history_learns_a_transition_between_layers():
    h = History(n_layers=3, n_experts=8, k=2, depth=2)
    for _ in range(40):  # every step: layer 0 uses {1, 2} -> layer 1 {3, 4} -> layer 2 {5, 6}
        first = h.predict(0, [1, 2], None, [1, 2])
        h.predict(1, [3, 4], None, [2])
        h.predict(2, [5, 6], None, [])
    assert choose(first[1], 0.5, 8) == [3, 4] or choose(first[1], 0.5, 8) == [4, 3]
    assert sorted(choose(first[2], 0.5, 8)) == [5, 6]
    assert first[1][0] < 0.05  # never seen after layer 0's pair


def test_history_starts_from_the_base_rate():
    h = History(n_layers=2, n_experts=8, k=2, depth=1)
    scores = h.predict(0, [0, 1], None, [1])[1]
    assert torch.allclose(scores, torch.full((8,), 0.25))


def test_combined_averages_and_lookahead_needs_router_input():
    la = Lookahead(2)
    assert la.predict(0, [1], None, [1]) == {}
    c = make_predictor("combined", 2, 4, 2, 1)
    ahead = {1: torch.tensor([[0.7, 0.2, 0.1, 0.0]])}
    got = c.predict(0, [1, 2], ahead, [1])[1]
    assert torch.allclose(got, (token_union(ahead[1], 2) + torch.full((4,), 0.5)) / 2)
    with pytest.raises(ConfigError):
        make_predictor("oracle", 2, 4, 2, 1)


@pytest.mark.parametrize("spec", ["lookahead:1:0", "combined:2:0.3", "history:2:0.4"])
def test_live_prefetch_quality_equals_the_offline_replay(spec, tmp_path):
    s = PrefetchSpec.parse(spec)
    trace, stats = tmp_path / "t.jsonl", tmp_path / "s.json"
    result = run_cli("trace", "-p", "It was a fine morning, and", "-p", "Jo sat down by the fire and", "-n", "40",
                     "--seed", "2", "--ram-budget", "3MiB", "--ahead", "2", "--prefetch", "--predictor", s.predictor,
                     "--prefetch-depth", str(s.depth), "--prefetch-threshold", str(s.threshold),
                     "-o", str(trace), "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    live = json.loads(stats.read_text())
    _, offline = prefetch_plan(read_trace(trace), s)
    assert sorted(offline) == sorted(int(k) for k in live["predictor_precision"])
    for layer, q in offline.items():
        assert q.precision == pytest.approx(live["predictor_precision"][str(layer)])
        assert q.recall == pytest.approx(live["predictor_recall"][str(layer)])
    assert live["prefetch_issued"] > 0


def test_each_predictor_has_a_default_threshold_that_does_not_read_everything(tmp_path):
    """history and combined score every expert above zero: their default threshold must still choose."""
    for predictor in ("history", "combined"):
        stats = tmp_path / f"{predictor}.json"
        result = run_cli("bench", "-p", "8", "-n", "24", "--ram-budget", "3MiB", "--prefetch", "--predictor", predictor,
                         "--stats-json", str(stats))
        assert result.returncode == 0, result.stderr
        s = json.loads(stats.read_text())
        assert f"{predictor}, depth 1, threshold 0.{4 if predictor == 'history' else 3}" == s["predictor"]
        assert 0 < s["prefetch_issued"] < s["lookups"]  # far fewer than every expert of every next layer
