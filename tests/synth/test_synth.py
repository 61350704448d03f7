"""`moestream synth`: files with real shapes and random weights that moestream (and llama.cpp) load.

Full presets are checked by their tensor table only (a real file is 17-26 GB); files are written for small
variants of each preset (same architecture, tokenizer kind and tensor set, smaller widths), through the Python
API, which the CLI wraps."""

from __future__ import annotations

import dataclasses
import math

import gguf
import numpy as np
import pytest
import torch

from moestream.cli.main import main
from moestream.engine import Engine, EngineConfig
from moestream.engine.loader import check_model
from moestream.engine.sequence import forward_logits, new_sequence
from moestream.engine.sampling import GREEDY
from moestream.errors import ConfigError
from moestream.formats.gguf import GGUFFile
from moestream.models.args import ModelArgs
from moestream.synth import PRESETS, QTYPES, tensor_plan, write_synth
from moestream.synth import writer
from moestream.synth.presets import Latent, Oss, Routing, Yarn
from moestream.synth.weights import MXFP4_MEAN_SQUARE, block_scale, mxfp4_exponent
from moestream.tokenizer import Tokenizer
from tests.cli.test_bad_input import assert_one_line_error, run_cli

Q4_0, Q8_0 = QTYPES["q4_0"], QTYPES["q8_0"]
SMALL = {
    "mixtral-8x7b": dict(n_layers=2, d_model=256, n_heads=4, n_kv_heads=2, head_dim=64, ff_expert=512,
                         ff_dense=512),
    # keeps head_dim 128 != d_model / n_heads, so the key/value lengths are written as for the real model
    "qwen3-30b-a3b": dict(n_layers=2, d_model=256, n_heads=4, n_kv_heads=2, n_experts=16, n_experts_used=4,
                          ff_expert=128, ff_dense=512),
    # one dense layer, MLA, 4 groups of which 2 used (the preset's 8 of which 4, scaled down with the experts)
    "deepseek-v3": dict(n_layers=3, d_model=256, n_heads=4, head_dim=96, n_experts=16, n_experts_used=4,
                        ff_expert=128, ff_dense=512,
                        routing=Routing(n_dense_leading=1, n_shared=1, gating="sigmoid", selection_bias=True,
                                        weights_scale=2.5, weights_norm=True, n_groups=4, groups_used=2),
                        latent=Latent(q_lora_rank=128, kv_lora_rank=64, nope_dim=32, rope_dim=32, v_dim=32),
                        yarn=Yarn(factor=8.0, original_context=4096, log_multiplier=0.1)),
    "glm-4.5-air": dict(n_layers=2, d_model=256, n_heads=4, n_kv_heads=2, head_dim=64, rope_dim=32, n_experts=16,
                        n_experts_used=4, ff_expert=128, ff_dense=512),
    # MXFP4 experts, sinks, biases, a sliding window shorter than the test's prompts
    "gpt-oss-20b": dict(n_layers=2, d_model=256, n_heads=4, n_kv_heads=2, head_dim=64, n_experts=8, ff_expert=128,
                        ff_dense=128, oss=Oss(sliding_window=2)),
}


def small(name: str, **changes):
    return dataclasses.replace(PRESETS[name], **{**SMALL[name], **changes})


@pytest.fixture(scope="module", params=sorted(SMALL))
def written(request, tmp_path_factory):
    """(preset, path) of a small Q4_0 file per preset, with the preset's full vocabulary size."""
    preset = small(request.param)
    path = tmp_path_factory.mktemp("synth") / f"{request.param}.gguf"
    size = write_synth(path, preset, Q4_0, seed=7, progress=False)
    assert path.stat().st_size == size
    return preset, path


@pytest.mark.parametrize("name, n_tensors, params_b, q4_0_gb", [
    ("mixtral-8x7b", 1 + 32 * 10 + 2, 46.70, 26.27),
    ("qwen3-30b-a3b", 1 + 48 * 12 + 2, 30.53, 17.22),
    ("deepseek-v3", 1 + 3 * 13 + 58 * 18 + 2, 671.03, 377.82),  # real: 671B without its MTP block
    ("glm-4.5-air", 1 + 1 * 12 + 45 * 17 + 2, 106.85, 60.19),  # real: 106B
    ("gpt-oss-120b", 1 + 36 * 19 + 2, 116.83, 62.32),  # real: 116.83B; MXFP4 experts whatever --qtype says
    ("gpt-oss-20b", 1 + 24 * 19 + 2, 20.91, 11.20),  # real: 20.91B
])
def test_full_presets_have_the_real_models_size(name, n_tensors, params_b, q4_0_gb):
    plan = tensor_plan(PRESETS[name], Q4_0)
    assert len(plan) == n_tensors
    assert sum(t.n_elements for t in plan) / 1e9 == pytest.approx(params_b, abs=0.01)
    assert sum(t.nbytes for t in plan) / 1e9 == pytest.approx(q4_0_gb, abs=0.01)


def test_file_parses_and_matches_the_plan(written):
    preset, path = written
    ours = GGUFFile(path)
    plan = tensor_plan(preset, Q4_0)
    assert [(t.name, t.shape, t.qtype) for t in ours.tensors.values()] == [(s.name, s.shape, s.qtype) for s in plan]
    if preset.vocab < 100_000:  # GGUFReader needs ~9 s for Qwen's 151936 tokens + merges; same code path
        _check_with_gguf_reader(path, plan)
    info = check_model(ours)
    assert info.args == ModelArgs.from_gguf(ours.metadata)
    a = info.args
    assert (a.arch, a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.head_dim) == (
        preset.arch, preset.n_layers, preset.d_model, preset.n_heads, preset.n_kv_heads, preset.head_dim)
    assert (a.n_experts, a.n_experts_used, a.ff_expert, a.rope_base, a.rms_eps, a.context_length) == (
        preset.n_experts, preset.n_experts_used, preset.ff_expert, preset.rope_base, pytest.approx(preset.rms_eps),
        preset.context)
    assert info.experts.layout == "merged"


def _check_with_gguf_reader(path, plan):
    theirs = gguf.GGUFReader(path)
    assert [t.name for t in theirs.tensors] == [s.name for s in plan]
    assert [tuple(int(n) for n in reversed(t.shape)) for t in theirs.tensors] == [s.shape for s in plan]


def test_expert_weights_are_zero_mean_with_the_planned_scale(written):
    preset, path = written
    info = GGUFFile(path).tensors["blk.1.ffn_down_exps.weight"]
    raw = np.array(GGUFFile(path).data(info.name))
    w = gguf.quants.dequantize(raw, info.qtype)  # [E, D, F]
    assert w.shape == (preset.n_experts, preset.d_model, preset.ff_expert)
    std = 1 / math.sqrt(preset.ff_expert)
    assert abs(w.mean()) < 0.01 * std
    if info.qtype == gguf.GGMLQuantizationType.MXFP4:  # a power-of-two scale: the nearest to the std
        e = mxfp4_exponent(preset.ff_expert)
        assert (raw.reshape(-1, 17)[:, 0] == e).all()
        assert w.std() == pytest.approx(2.0 ** (e - 128) * math.sqrt(MXFP4_MEAN_SQUARE), rel=0.05)
        assert w.std() / std == pytest.approx(1, rel=0.42)
        return
    assert w.std() == pytest.approx(std, rel=0.05)
    scales = raw.reshape(-1, 18)[:, :2].copy().view(np.float16).astype(np.float32)
    assert np.allclose(np.abs(scales), block_scale(Q4_0, preset.ff_expert), rtol=1e-3)
    assert 0.45 < (scales > 0).mean() < 0.55  # random signs


def test_tokenizer_round_trips_text(written):
    preset, path = written
    tok = Tokenizer.from_gguf(path)
    assert tok.vocab_size == preset.vocab
    text = "The capital of France is Paris.\nNew line, 123 digits & UTF-8: café ü 日本"
    ids = tok.encode(text, add_bos=False)
    assert len(ids) < len(text.encode())  # merges happen
    assert tok.decode(ids) == text
    assert tok.eos_id in tok.eog_ids and tok.is_special(tok.eos_id)


def test_generates_tokens(written):
    preset, path = written
    with Engine.open(path, EngineConfig(progress=False)) as engine:
        events = list(engine.generate(engine.tokenizer.encode("Hello world"), GREEDY, 3))
        assert len(events) == 3 and all(0 <= e.token < preset.vocab for e in events)
        logits = forward_logits(engine.model, new_sequence(engine.model, [], 16), [1, 2, 3])  # [V]
    assert torch.isfinite(logits).all() and logits.std() > 0.1


@pytest.mark.parametrize("qtype", [Q4_0, Q8_0])
def test_same_seed_same_bytes(tmp_path, qtype):
    preset = small("mixtral-8x7b", n_layers=1, vocab=2000)
    paths = [tmp_path / f"{name}.gguf" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4)):
        write_synth(path, preset, qtype, seed=seed, progress=False)
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c and len(a) == len(c)


def test_layers_share_their_bytes_across_layer_counts(tmp_path):
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    write_synth(one, small("qwen3-30b-a3b", n_layers=1, vocab=3000), Q8_0, progress=False)
    write_synth(two, small("qwen3-30b-a3b", n_layers=2, vocab=3000), Q8_0, progress=False)
    f1, f2 = GGUFFile(one), GGUFFile(two)
    for name in ("token_embd.weight", "blk.0.ffn_up_exps.weight", "output.weight"):
        assert np.array_equal(f1.data(name), f2.data(name))


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"previous")

    def interrupted(spec, seed):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synth(out, small("mixtral-8x7b", vocab=2000), Q4_0, progress=False)
    assert out.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [out]


def test_not_enough_disk_space_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda path: type("U", (), {"free": 1 << 20})())
    monkeypatch.setitem(PRESETS, "tiny", small("mixtral-8x7b", vocab=2000))
    out = tmp_path / "model.gguf"
    assert main(["synth", "--preset", "tiny", "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GiB is free" in err and "needs" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(PRESETS, "tiny", small("qwen3-30b-a3b", vocab=3000))
    out = tmp_path / "model.gguf"
    assert main(["synth", "--preset", "tiny", "--qtype", "q8_0", "-o", str(out), "--layers", "1",
                 "--seed", "5", "--no-progress"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    f = GGUFFile(out)
    _check_with_gguf_reader(out, tensor_plan(PRESETS["tiny"].with_layers(1), Q8_0))
    assert f.metadata["qwen3moe.block_count"] == 1
    assert f.tensors["blk.0.attn_q.weight"].qtype == Q8_0
    assert list(tmp_path.iterdir()) == [out]


def test_cli_refuses_a_missing_directory(tmp_path):
    out = tmp_path / "no" / "such" / "model.gguf"
    result = run_cli("synth", "--preset", "mixtral-8x7b", "-o", str(out))
    assert result.returncode == 1
    assert_one_line_error(result, str(out.parent), "does not exist")


@pytest.mark.parametrize("args", [["--preset", "gpt-5"], ["--preset", "mixtral-8x7b", "--qtype", "q2_k"]])
def test_cli_rejects_unknown_preset_and_qtype(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exc:  # argparse's usage error
        main(["synth", *args, "-o", str(tmp_path / "x.gguf")])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_vocab_file_must_match_the_preset(tmp_path):
    other = tmp_path / "vocab.gguf"
    write_synth(other, small("mixtral-8x7b", vocab=2000), Q4_0, progress=False)
    with pytest.raises(ConfigError, match="needs 'llama' with 32000"):
        write_synth(tmp_path / "out.gguf", small("mixtral-8x7b"), Q4_0, vocab_file=other, progress=False)
    copied = tmp_path / "copied.gguf"
    write_synth(copied, small("mixtral-8x7b", vocab=2000), Q4_0, vocab_file=other, progress=False)
    assert GGUFFile(copied).metadata["tokenizer.ggml.tokens"] == GGUFFile(other).metadata["tokenizer.ggml.tokens"]


def test_layers_must_be_positive():
    with pytest.raises(ConfigError, match="--layers"):
        PRESETS["mixtral-8x7b"].with_layers(0)
