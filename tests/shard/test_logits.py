"""2 and 3 ranks on loopback (gloo) give logits bit-identical to one process: the embedded model on the native MoE
step and on the PyTorch path, and a DeepSeek-shaped synth file (dense first layer, shared expert, grouped sigmoid
routing) and gpt-oss (biased experts, clamped SwiGLU), each with a cache budget so tight that most lookups miss; and with the prefetcher on, every rank reads
its own experts ahead (rank 0 names the others' predicted experts to them) with the logits unchanged."""

from __future__ import annotations

import pytest
import torch

from moestream.assets import default_model_path
from moestream.cache.config import CacheConfig
from moestream.engine.loader import load_model
from tests.cache.streaming_helpers import greedy_logits, tight_budget
from tests.fixtures.tiny_models import gguf_path
from tests.shard.ranks import ROOT, torchrun
from tests.synth.test_synth import Q4_0, small

SCRIPT = str(ROOT / "tests" / "shard" / "rank_logits.py")


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    from moestream.synth import write_synth

    path = tmp_path_factory.mktemp("shard") / "deepseek.gguf"
    write_synth(path, small("deepseek-v3", vocab=2000), Q4_0, seed=3, progress=False)
    return path


def one_process(path, budget: int | None, prefetch: bool = False) -> list[torch.Tensor]:
    lm = load_model(path, progress=False, cache=CacheConfig(ram_budget=budget, prefetch=prefetch))
    try:
        return greedy_logits(lm)
    finally:
        lm.close()


def sharded(path, n: int, budget: int | None, tmp_path, *flags: str) -> list[torch.Tensor]:
    return sharded_run(path, n, budget, tmp_path, *flags)["logits"]


def sharded_run(path, n: int, budget: int | None, tmp_path, *flags: str) -> dict:
    """{"logits": rank 0's, "ranks": the run's per-rank counters (engine/shard_report.py)}"""
    out = tmp_path / f"logits-{n}.pt"
    run = torchrun(n, SCRIPT, str(path), str(out), str(budget) if budget else "auto", *flags)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(out)


def assert_identical(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want) == 7
    for step, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"step {step}: max difference {float((g - w).abs().max())}"


@pytest.mark.parametrize("n", [2, 3])
def test_default_model_native_step(n, tmp_path):
    path = default_model_path()
    budget = tight_budget(path)
    assert_identical(sharded(path, n, budget, tmp_path), one_process(path, budget))


def test_default_model_pytorch_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MOESTREAM_NO_NATIVE_STEP", "1")  # both runs, and the ranks torchrun starts
    path = default_model_path()
    assert_identical(sharded(path, 2, None, tmp_path), one_process(path, None))


def test_deepseek_shaped_synth_file(deepseek, tmp_path):
    budget = tight_budget(deepseek)
    assert_identical(sharded(deepseek, 3, budget, tmp_path), one_process(deepseek, budget))


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_gpt_oss_biased_experts(outtype, tmp_path):
    """gpt-oss's experts (per-expert biases, clamped SwiGLU; the PyTorch path): the owner ranks build the same
    experts objects from the architecture's own builder and its small resident tensors."""
    path = gguf_path("gpt-oss", outtype)
    budget = tight_budget(path)
    assert_identical(sharded(path, 3, budget, tmp_path), one_process(path, budget))


def test_prefetch_reads_ahead_on_every_rank_and_changes_no_logit(tmp_path):
    """Rank 0's prefetcher names the other ranks' predicted experts to them (one PREFETCH message per owner);
    each reads its own ahead into its own cache. Room for two layers' top-k per rank, so reads ahead have slots."""
    path = default_model_path()
    budget = 2 * tight_budget(path)
    run = sharded_run(path, 3, budget, tmp_path, "--prefetch")
    assert_identical(run["logits"], one_process(path, budget, prefetch=True))
    ranks = {r["rank"]: r for r in run["ranks"]}
    for rank in (1, 2):
        assert ranks[rank]["prefetch_hinted"] > 0, ranks[rank]
        assert ranks[rank]["prefetch_issued"] > 0 and ranks[rank]["prefetch_useful"] > 0, ranks[rank]
    assert ranks[0]["prefetch_issued"] > 0, ranks[0]
