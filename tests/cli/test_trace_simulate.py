"""`moestream trace` and `moestream simulate` on the embedded default model: the simulator replays a recorded
trace with exactly the hits the live cache counted, Belady's MIN bounds every policy, and bad input is refused."""

from __future__ import annotations

import json

import pytest

from moestream.cache.policy import make_policy
from moestream.cache.simulate import simulate
from moestream.engine.simulation import budget_slots
from moestream.engine.trace import read_trace
from tests.cli.test_bad_input import assert_one_line_error, run_cli

PROMPTS = ("It was a fine morning, and", "\"Oh, Jo!\" said Meg,", "Poirot looked at me")


@pytest.fixture(scope="module", params=["lru", "layer"])
def traced(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"trace-{request.param}")
    # prefetch off: the simulator replays demand lookups only
    args = ["trace", "-n", "40", "--seed", "3", "--ram-budget", "3MiB", "--cache-policy", request.param, "--no-prefetch",
            "-o", str(d / "t.jsonl"), "--stats-json", str(d / "s.json")]
    for p in PROMPTS:
        args += ["-p", p]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return request.param, d / "t.jsonl", json.loads((d / "s.json").read_text())


def test_trace_records_every_layer_of_every_step(traced):
    _, path, stats = traced
    trace = read_trace(path)
    h = trace.header
    assert h["n_layers"] == 4 and h["n_experts"] == 8 and h["k"] == 2
    assert {r["seq"] for r in trace.records} == {0, 1, 2}
    for r in trace.records:
        assert len(r["positions"]) == len(r["experts"]) == len(r["probs"])
        assert all(len(row) == 2 and 0 <= min(row) and max(row) < 8 for row in r["experts"])
        assert all(1 >= p[0] >= p[1] > 0 for p in r["probs"])
    assert sum(len(e) for _, e in trace.acquires()) == stats["lookups"]


def test_simulator_replays_the_live_cache_exactly(traced):
    policy, path, stats = traced
    trace = read_trace(path)
    slots = budget_slots("3MiB", trace.header)
    assert slots == stats["cache_slots"]
    sim = simulate(trace.acquires(), slots, make_policy(policy))
    assert (sim.lookups, sim.hits) == (stats["lookups"], stats["hits"])


def test_simulate_prints_hit_rates_with_belady_on_top(traced, tmp_path):
    _, path, _ = traced
    png = tmp_path / "hit.png"
    result = run_cli("simulate", str(path), "--budget", "25%", "50%", "12", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if "experts)" in line]
    assert len(rows) == 3
    header = next(line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["budget"])
    assert header[-1] == "belady" and "lru" in header
    for row in rows:
        rates = [float(x.rstrip("%")) for x in row[-(len(header) - 1):]]
        assert rates[-1] >= max(rates[:-1])  # the offline optimum bounds every policy
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_refuses_bad_input(traced, tmp_path):
    _, path, _ = traced
    assert_one_line_error(run_cli("simulate", str(path), "--budget", "1"), "needs at least 2")
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert_one_line_error(run_cli("simulate", str(junk)), "routing trace")
    assert_one_line_error(run_cli("simulate", str(path), "--prefetch", "lookahead:1:0"), "trace --ahead 1")
    assert_one_line_error(run_cli("simulate", str(path), "--prefetch", "oracle:1:0"), "PREDICTOR:DEPTH:THRESHOLD")
    assert_one_line_error(run_cli("simulate", str(path), "--prefetch", "history:9:0"), "PREDICTOR:DEPTH:THRESHOLD")


def test_simulate_replays_prefetch_and_never_reads_less_than_belady_misses(traced):
    _, path, _ = traced
    result = run_cli("simulate", str(path), "--budget", "25%", "50%", "--prefetch", "history:2:0.3")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    belady = [float(line.split()[-1].rstrip("%")) for line in out[:4] if "experts)" in line]
    start = next(i for i, line in enumerate(out) if line.startswith("prefetch history:2:0.3: precision"))
    rows = [line for line in out[start:] if "experts)" in line]
    assert len(rows) == 2 and len(belady) == 2
    for row, best in zip(rows, belady):
        cells = row.split(")", 1)[1].split()  # hit / reads per policy
        reads = [float(cells[i + 2].rstrip("%")) for i in range(0, len(cells), 3)]
        assert len(reads) == 4 and min(reads) >= 100 - best - 1e-6
