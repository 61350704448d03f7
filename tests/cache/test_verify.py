"""--verify-experts on the embedded model under a budget that misses at every lookup (so every expert is read
again and again): unchanged, it is bit-identical to a run without it; an expert overwritten in the file while the
model runs gives ExpertChangedError naming layer, expert and file, where the unverified run silently changes."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from moestream.assets import default_model_path
from moestream.cache.config import CacheConfig
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.engine.loader import load_model
from moestream.errors import ExpertChangedError
from tests.cache.streaming_helpers import PROMPT, run, tight_budget
from tests.cache.test_faults import bounded
from tests.cache.test_streaming import assert_identical
from tests.cli.test_bad_input import assert_one_line_error, run_cli

MODEL = default_model_path()


@pytest.mark.parametrize("reader", ["thread", "uring"])
def test_verified_streaming_is_bit_identical_and_checks_every_re_read(reader):
    plain, _ = run(MODEL, n_decode=8, ram_budget=tight_budget(MODEL), reader=reader)
    verified, cache = run(MODEL, n_decode=8, ram_budget=tight_budget(MODEL), reader=reader, verify=True)
    assert_identical(verified, plain)
    s, v = cache.stats, cache.verifier
    assert s.hits == 0 and s.read_errors == 0
    first_reads = len({key for key in s.routed})
    assert v.verified_reads == s.misses - first_reads > 0  # every read after an expert's first one was checked
    assert 0 < v.verified_bytes < v.hashed_bytes <= s.bytes_read  # own bytes only, no alignment padding


class Decoder:
    """Greedy decoding one step at a time, so a test can act on the file between steps."""

    def __init__(self, lm):
        self.lm, self.seq = lm, new_sequence(lm.model, PROMPT, len(PROMPT) + 64)
        self.logits = self._forward(PROMPT)

    @torch.inference_mode()
    def _forward(self, tokens: list[int]) -> torch.Tensor:
        return forward_logits(self.lm.model, self.seq, tokens)

    def step(self) -> torch.Tensor:
        token = int(self.logits.argmax())
        self.seq.tokens.append(token)
        self.logits = self._forward([token])
        return self.logits


def overwrite_expert(lm, path, layer: int, expert: int) -> None:
    """Invert the first KiB of one expert's gate matrix in the file, in place (same size), as a careless copy over
    a model in use would."""
    rng = lm.experts.ranges(layer, expert)[0]
    with open(path, "r+b") as f:
        f.seek(rng.offset)
        old = f.read(1024)
        f.seek(rng.offset)
        f.write(bytes(b ^ 0xFF for b in old))
        f.flush()
        os.fsync(f.fileno())


def assert_no_slot_lost(cache) -> None:
    """After the failed step: no reference held; a slot is free, holds a ready expert, or is a read-ahead still in
    flight (prefetches of later layers may outlive the failed acquire; they land or are cancelled at close)."""
    entries = cache._entries.values()
    assert all(e.refs == 0 for e in entries)
    assert all(e.weights is not None or (e.prefetched and e.job is not None) for e in entries)
    assert cache.pool.free_count + len(cache._entries) == cache.pool.n_slots


def most_routed(cache, layer: int) -> int:
    return max(range(cache.store.n_experts), key=lambda e: cache.stats.routed[(layer, e)])


def start_then_overwrite(tmp_path, verify: bool, layer: int = 0, slots: int = 1, **cache):
    """A copy of the model, run for three greedy steps under a budget of `slots` x one layer's top-k (1: a miss at
    every lookup); then the expert of `layer` used most so far is overwritten on disk.
    Returns (model, decoder, that expert, path)."""
    path = tmp_path / "model.gguf"
    shutil.copy(MODEL, path)
    config = CacheConfig(ram_budget=slots * tight_budget(path), verify=verify, **cache)
    lm = load_model(path, progress=False, cache=config)
    dec = Decoder(lm)
    for _ in range(3):
        dec.step()
    expert = most_routed(lm.cache, layer)
    overwrite_expert(lm, path, layer, expert)
    return lm, dec, expert, path


@pytest.mark.parametrize("cache", [{"layer": 0}, {"layer": 0, "direct": False, "reader": "thread"},
                                   {"layer": 1, "slots": 3, "prefetch": True}], ids=["direct", "buffered", "prefetch"])
def test_an_expert_changed_on_disk_mid_run_is_a_clear_error(tmp_path, cache):
    # with prefetch, layer 1's experts are read ahead from layer 0: a changed one that comes back as a read-ahead
    # is dropped, and the demand read that follows fails
    lm, dec, expert, path = start_then_overwrite(tmp_path, verify=True, **cache)
    try:
        with pytest.raises(ExpertChangedError) as info:
            for _ in range(30):
                bounded(dec.step)
        message = str(info.value)
        assert f"expert {expert} of layer {cache['layer']}" in message and str(path) in message
        assert "changed on disk while running" in message
        assert_no_slot_lost(lm.cache)
        assert lm.cache.stats.read_errors >= 1
    finally:
        lm.close()


def test_without_verification_the_same_change_goes_unnoticed(tmp_path):
    ref, _ = run(MODEL, n_decode=33, ram_budget=tight_budget(MODEL))  # prompt logits, then 33 steps
    lm, dec, _, _ = start_then_overwrite(tmp_path, verify=False)
    try:
        got = [bounded(dec.step) for _ in range(30)]
        assert lm.cache.stats.read_errors == 0
    finally:
        lm.close()
    assert any(not torch.equal(a, b) for a, b in zip(got, ref[4:])), "the overwrite should change the output"


def test_cli_summary_reports_verification_when_on(tmp_path):
    budget = str(tight_budget(MODEL))
    common = ["generate", "-m", str(MODEL), "-p", "It was a fine morning", "-n", "8", "--temp", "0",
              "--ram-budget", budget, "--stats", "--stats-json"]
    on = run_cli(*common, str(tmp_path / "on.json"), "--verify-experts")
    off = run_cli(*common, str(tmp_path / "off.json"))
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout == off.stdout
    assert "verify   on:" in on.stderr and "re-reads checked against their first read" in on.stderr
    assert "verify" not in off.stderr  # no line when off
    s_on, s_off = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("on", "off"))
    assert s_on["verify_experts"] is True and s_on["verified_bytes"] > 0 and s_on["verified_reads"] > 0
    assert s_off["verify_experts"] is False and s_off["verified_bytes"] == 0


def test_verification_with_the_memory_map_is_refused():
    result = run_cli("generate", "-m", str(MODEL), "-p", "x", "-n", "1", "--mmap", "--verify-experts")
    assert_one_line_error(result, "--verify-experts", "--mmap")
