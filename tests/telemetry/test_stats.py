"""Percentiles are nearest-rank everywhere: the p-th of N sorted values is the one at 1-based rank ceil(p/100 * N);
p0 is the minimum, p100 the maximum. Checked on the definition's own examples, against a brute-force statement of
it, and through the run summary that reports them (JSON and the printed lines)."""

from __future__ import annotations

import random

import pytest

from moestream.assets import default_model_path
from moestream.cache.config import CacheConfig
from moestream.cli.summary import print_run_summary
from moestream.engine.loader import load_model
from moestream.engine.report import StepMeter, run_summary
from moestream.telemetry import Samples, nearest_rank


@pytest.mark.parametrize("values, q, expected", [
    (range(1, 101), 95, 95), (range(1, 101), 50, 50), (range(1, 101), 99, 99), (range(1, 101), 0, 1),
    (range(1, 101), 100, 100), ([1], 99, 1), ([1], 0, 1), ([1, 2], 50, 1), ([1, 2], 51, 2),
    (range(1, 21), 95, 19), (range(1, 11), 95, 10), (range(1, 101), 7, 7), (range(1, 51), 14, 7),
    ([5, 1, 4, 2, 3], 60, 3), ([2, 2, 2, 9], 75, 2), ([2, 2, 2, 9], 76, 9),
])
def test_nearest_rank_examples(values, q, expected):
    assert Samples(list(values)).pct(q) == expected


def brute_force(values: list[int], q: int) -> int:
    """The smallest sample with at least q% of the samples at or below it (q = 0: the smallest sample)."""
    return min(v for v in values if 100 * sum(w <= v for w in values) >= q * len(values))


def test_nearest_rank_matches_its_definition_for_every_size_and_percent():
    rng = random.Random(7)
    for n in range(1, 60):
        values = [rng.randrange(1000) for _ in range(n)]
        for q in range(0, 101):
            assert nearest_rank(values, q) == brute_force(values, q), (n, q)


def test_empty_is_zero_and_out_of_range_is_refused():
    assert Samples().pct(95) == 0.0 and Samples().summary() == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    for q in (-1, 100.5):
        with pytest.raises(ValueError, match="between 0 and 100"):
            Samples([1.0]).pct(q)


def test_summary_scales_the_three_percentiles():
    s = Samples([v / 1000 for v in range(1, 101)])  # 1..100 ms in seconds
    assert s.summary(1e3) == pytest.approx({"p50": 50.0, "p95": 95.0, "p99": 99.0})


def test_run_summary_reports_nearest_rank_step_compute_and_read_percentiles(capsys):
    lm = load_model(default_model_path(), progress=False, cache=CacheConfig())
    try:
        meter = StepMeter(lm.cache)
        meter.steps = Samples([v / 1000 for v in range(100, 0, -1)])  # 100..1 ms, unsorted on purpose
        meter.compute = Samples([v / 1000 for v in range(1, 21)])  # 1..20 ms
        lm.cache.stats.read_latency = Samples([0.004])  # one read of 4 ms
        r = run_summary(lm, 1, 0.1, meter)
    finally:
        lm.close()
    assert r["step_ms"] == pytest.approx({"p50": 50.0, "p95": 95.0, "p99": 99.0})
    assert r["compute_ms_per_token"] == pytest.approx({"p50": 10.0, "p95": 19.0, "p99": 20.0})
    assert r["read_latency_ms"] == pytest.approx({"p50": 4.0, "p95": 4.0, "p99": 4.0})
    print_run_summary(r)
    err = capsys.readouterr().err
    assert "step p50 50.0 ms p95 95.0 p99 99.0" in err
    assert "compute per token p50 10.0 ms p95 19.0 p99 20.0" in err
    assert "per expert p50 4.0 ms p95 4.0 p99 4.0" in err
