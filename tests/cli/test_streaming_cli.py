"""Streaming as a user drives it: budgets, the run summary and --stats-json, pinning, memory held to the budget
(peak RSS of a real process on a model several times larger than its budget), and buffered fallback on tmpfs."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from moestream.synth import PRESETS, QTYPES, write_synth
from tests.cli.test_bad_input import assert_one_line_error, run_cli
from tests.fixtures.tiny_models import gguf_path

MiB = 1 << 20
# Mixtral's architecture at small widths: 6 layers x 8 experts x 6.5 MiB (Q8_0) = 313 MiB of experts.
WIDE = dict(n_layers=6, d_model=512, n_heads=8, n_kv_heads=2, head_dim=64, ff_expert=4096, ff_dense=4096)
BUDGET = 24 * MiB  # three experts
SLACK = 48 * MiB  # activations, KV cache, allocator noise


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wide") / "wide-q8_0.gguf"
    write_synth(path, dataclasses.replace(PRESETS["mixtral-8x7b"], **WIDE), QTYPES["q8_0"], seed=3, progress=False)
    return path


def bench_stats(tmp_path: Path, model: Path, *flags: str) -> dict:
    out = tmp_path / "stats.json"
    result = run_cli("bench", "-m", str(model), "-p", "8", "-n", "8", "--stats-json", str(out), *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_process_memory_stays_within_the_budget(wide_model, tmp_path):
    s = bench_stats(tmp_path, wide_model, "--ram-budget", "24MiB")
    assert s["expert_bytes"] > 4 * (BUDGET + SLACK), "the model must be several times larger than the budget"
    assert s["cache_allocated_bytes"] <= s["ram_budget_bytes"] == BUDGET
    assert s["misses"] > 0 and s["evictions"] > 0
    growth = s["peak_rss_bytes"] - s["rss_after_load_bytes"]
    assert growth < BUDGET + SLACK, f"RSS grew {growth / MiB:.0f} MiB with a {BUDGET / MiB:.0f} MiB budget: {s}"
    # the same measurement sees expert bytes when they are memory-mapped instead: it can fail
    mapped = bench_stats(tmp_path, wide_model, "--mmap")
    assert mapped["peak_rss_bytes"] - mapped["rss_after_load_bytes"] > BUDGET + SLACK


def test_summary_and_stats_json_report_cache_io_and_memory(wide_model, tmp_path):
    out = tmp_path / "s.json"
    result = run_cli("bench", "-m", str(wide_model), "-p", "8", "-n", "4", "--ram-budget", "32MiB",
                     "--stats-json", str(out))
    assert result.returncode == 0, result.stderr
    for needle in ("decode", "hits", "misses", "reads", "per expert p50", "peak RSS", "waiting on I/O", "budget"):
        assert needle in result.stderr
    s = json.loads(out.read_text())
    assert s["hits"] + s["misses"] == s["lookups"] > 0
    assert s["decode_tokens"] == 4 and s["decode_tps"] > 0 and s["prefill_tps"] > 0
    assert s["bytes_read"] >= s["misses"] * s["slot_bytes"] // 2
    assert set(s["read_latency_ms"]) == {"p50", "p95", "p99"} and set(s["compute_ms_per_token"]) == {"p50", "p95", "p99"}
    assert 0 <= s["io_wait_share"] <= 1 and s["read_throughput_Bps"] > 0
    assert s["direct_io"] is True and s["reader"] in ("thread", "uring")
    assert sum(map(sum, s["routing_counts"])) == s["lookups"]


def test_greedy_output_is_the_same_under_a_tight_budget():
    path = str(gguf_path("qwen3moe", "q8_0"))
    args = ["generate", "-m", path, "-p", "Once upon a time", "-n", "16", "--temp", "0"]
    roomy, tight = run_cli(*args), run_cli(*args, "--ram-budget", "100KiB", "--io-chunk", "4KiB", "--stats")
    assert roomy.returncode == 0 and tight.returncode == 0, tight.stderr
    assert tight.stdout == roomy.stdout
    assert "misses" in tight.stderr


def test_budget_below_one_layers_experts_is_refused_at_start(wide_model):
    result = run_cli("generate", "-m", str(wide_model), "-p", "hi", "--ram-budget", "8MiB")
    assert_one_line_error(result, "RAM budget 8.00 MiB", "2 experts per layer", "give at least")


@pytest.mark.parametrize("flags, needle", [
    (["--ram-budget", "lots"], "cannot read 'lots' as a size"),
    (["--ram-budget", "0"], "must be positive"),
    (["--pin-hot", "4"], "--pin-hot needs --profile"),
    (["--io-chunk", "1000"], "multiple of 4 KiB"),
    (["--pin", "/nonexistent.json"], "cannot read JSON"),
])
def test_bad_streaming_flags_get_one_line_errors(flags, needle):
    result = run_cli("generate", "-m", str(gguf_path("mixtral", "q8_0")), "-p", "hi", *flags)
    assert_one_line_error(result, needle)


def test_pin_hot_keeps_the_profiles_most_used_experts(wide_model, tmp_path):
    profile = bench_stats(tmp_path, wide_model, "--ram-budget", "64MiB")
    counts = profile["routing_counts"]
    out = tmp_path / "pinned.json"
    result = run_cli("bench", "-m", str(wide_model), "-p", "8", "-n", "4", "--ram-budget", "64MiB", "--pin-hot", "3",
                     "--profile", str(tmp_path / "stats.json"), "--stats-json", str(out))
    assert result.returncode == 0, result.stderr
    s = json.loads(out.read_text())
    assert s["pinned_experts"] == 3 and "3 pinned" in result.stderr
    assert max(map(max, counts)) > 0


def test_pinning_more_than_the_budget_holds_is_refused(wide_model, tmp_path):
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps([[layer, e] for layer in range(6) for e in range(8)]))
    result = run_cli("generate", "-m", str(wide_model), "-p", "hi", "--ram-budget", "64MiB", "--pin", str(pins))
    assert_one_line_error(result, "cannot pin 48 experts")


def test_a_filesystem_refusing_direct_io_falls_back_to_buffered_reads(tmp_path):
    """ramfs refuses O_DIRECT (tmpfs accepts it since Linux 6.6); it is mounted in a private mount namespace."""
    src = gguf_path("olmoe", "q8_0")
    args = ["-p", "Hello there", "-n", "12", "--temp", "0", "--ram-budget", "200KiB", "--stats"]
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    script = (f"mount -t ramfs ramfs {mnt} && cp {src} {mnt}/m.gguf && "
              f"{sys.executable} -m moestream generate -m {mnt}/m.gguf {' '.join(shlex.quote(a) for a in args)}")
    on_ramfs = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=120)
    on_disk = run_cli("generate", "-m", str(src), *args)
    assert on_ramfs.returncode == 0, on_ramfs.stderr
    assert "moestream: warning:" in on_ramfs.stderr and "refuses direct I/O; using buffered reads" in on_ramfs.stderr
    assert "reader, buffered" in on_ramfs.stderr and "reader, direct" in on_disk.stderr
    assert on_ramfs.stdout == on_disk.stdout
