"""Split GGUF models (NAME-00001-of-0000N.gguf, written here by gguf-py's own shard writer): any shard opens the
whole model, resident and streamed tensors are read from whichever shard holds them (direct I/O, both readers,
and the memory map), logits equal the unsplit file's; a missing or foreign shard is a one-line error naming it."""

from __future__ import annotations

import shutil

import pytest
import torch

from moestream.cache.config import CacheConfig
from moestream.engine.loader import inspect_file, load_model
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.errors import GGUFFormatError
from moestream.formats.split import SHARD_BITS, SplitGGUF, open_gguf
from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.tiny_models import gguf_path
from tests.models.test_hf_parity import PROMPT

ARCH = "deepseek2"  # dense and MoE layers, latent attention: tensors of every kind land in several shards


@pytest.fixture(scope="module")
def split_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "model.gguf"
    first = copy_gguf(gguf_path(ARCH, "q8_0"), out, split_max_tensors=9)
    return sorted(first.parent.glob("model-*-of-*.gguf"))


def logits(path, **cache) -> torch.Tensor:
    lm = load_model(path, progress=False, cache=CacheConfig(**cache))
    try:
        with torch.inference_mode():
            seq = new_sequence(lm.model, [], 512)
            return torch.stack([forward_logits(lm.model, seq, [t]) for t in PROMPT])
    finally:
        lm.close()


def test_split_model_opens_from_any_shard(split_model):
    assert len(split_model) >= 4
    for shard in (split_model[0], split_model[-1]):
        gguf = open_gguf(shard)
        assert isinstance(gguf, SplitGGUF) and gguf.paths == split_model
        assert gguf.architecture == ARCH
    whole = open_gguf(gguf_path(ARCH, "q8_0"))
    assert set(gguf.tensors) == set(whole.tensors)
    assert {info.offset >> SHARD_BITS for info in gguf.tensors.values()} == set(range(len(split_model)))


@pytest.mark.parametrize("cache", [dict(reader="uring"), dict(reader="thread", ram_budget=5 * 20 * 1024),
                                   dict(mmap=True)], ids=["uring", "thread-small-budget", "mmap"])
def test_split_model_gives_the_unsplit_logits(split_model, cache):
    assert torch.equal(logits(split_model[1], **cache), logits(gguf_path(ARCH, "q8_0"), **cache))


def test_inspect_lists_the_shards(split_model):
    from tests.cli.test_bad_input import run_cli

    result = run_cli("inspect", str(split_model[0]))
    assert result.returncode == 0, result.stderr
    assert f"{len(split_model)} shards" in result.stdout and split_model[-1].name in result.stdout


def test_a_missing_shard_is_named(split_model, tmp_path):
    for p in split_model:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / split_model[2].name).unlink()
    with pytest.raises(GGUFFormatError, match=f"{split_model[2].name}: shard missing"):
        inspect_file(tmp_path / split_model[0].name)


def test_a_shard_of_another_model_is_refused(split_model, tmp_path):
    for p in split_model:
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(split_model[1], tmp_path / split_model[2].name)  # shard 2 where shard 3 belongs
    with pytest.raises(GGUFFormatError, match="different models mixed"):
        inspect_file(tmp_path / split_model[0].name)


def test_a_renamed_shard_cannot_find_its_siblings(split_model, tmp_path):
    lone = shutil.copy(split_model[0], tmp_path / "renamed.gguf")
    with pytest.raises(GGUFFormatError, match="cannot be found"):
        inspect_file(lone)
