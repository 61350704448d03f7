"""The CLI as a user runs it: inspect numbers, streamed generation, chat over stdin."""

from __future__ import annotations

import pytest
import torch

from moestream.engine import GREEDY, Engine, EngineConfig
from tests.cli.test_bad_input import run_cli
from tests.fixtures.tiny_models import CONFIGS, gguf_path


def test_inspect_reports_architecture_and_bytes():
    path = gguf_path("qwen2moe")
    result = run_cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(None, 1) if " " in line else (line, "") for line in result.stdout.splitlines())
    out = result.stdout
    cfg = CONFIGS["qwen2moe"][1]
    assert f"experts            {cfg['num_experts']} per layer, top-{cfg['num_experts_per_tok']}" in out
    assert f"layers             {cfg['num_hidden_layers']}" in out
    assert f"FFN width {cfg['moe_intermediate_size']}" in out and f"FFN width {cfg['shared_expert_intermediate_size']}" in out
    # one expert = gate + up + down, F32: 3 * 48 * 64 * 4 bytes = 36 KiB
    assert "36.00 KiB each" in out
    assert "qwen2moe (MoE)" in out and "50257 tokens, gpt2 (gpt-2)" in out
    assert "grouped-query, 4 query / 2 key-value heads, head_dim 16" in out
    assert "sigmoid-gated" in out and "softmax scores, not renormalised" in out
    # K and V: 2 layers x 2 x 2 heads x 16 dims x 4 bytes
    assert "KV cache           512 B per token" in out


def test_inspect_describes_latent_attention_groups_and_dense_layers():
    result = run_cli("inspect", str(gguf_path("deepseek2")))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "multi-head latent, 4 heads (64 + 16 rotary dims, value 24), latent 32, query rank 64" in out
    assert "KV cache           576 B per token" in out  # 3 layers x (32 latent + 16 rotary key) x 4 bytes
    assert "sigmoid scores, renormalised, selection bias, 2 of 4 expert groups, weights x 2.5" in out
    assert "layers             3 (1 dense, then 2 MoE)" in out and "32 in all" in out
    assert "FFN width 32, ungated" in out


def test_inspect_describes_sliding_windows_sinks_and_biases():
    result = run_cli("inspect", str(gguf_path("gpt-oss")))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sliding window     4 keys on even layers, the whole context on the others" in out
    assert "attention sinks    a learned sink logit per head" in out
    assert "softmax scores, renormalised, router bias, per-expert biases" in out


def test_inspect_describes_a_hybrid_models_layers_and_state():
    result = run_cli("inspect", str(gguf_path("qwen35moe")))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ("hybrid: 3 Gated DeltaNet layers (2 key / 4 value heads of 16 / 16, convolution 4), 1 gated "
            "full-attention layer (4 query / 2 key-value heads, head_dim 128)") in out
    assert "KV cache           2.00 KiB per token (float32, the 1 full-attention layer)" in out  # 2 x 2 x 128 x 4
    # per layer: window 3 x 128 channels + 4 heads x 16 x 16, float32
    assert "recurrent state    16.50 KiB per sequence (float32, 3 linear-attention layers)" in out


def test_generate_streams_the_engines_greedy_tokens():
    path = gguf_path("mixtral")
    result = run_cli("generate", "-m", str(path), "-p", "The king said", "-n", "12", "--temp", "0", "--no-echo")
    assert result.returncode == 0, result.stderr
    with Engine.open(path, EngineConfig(progress=False)) as engine:
        tok = engine.tokenizer
        tokens = [e.token for e in engine.generate(tok.encode("The king said"), GREEDY, 12)]
    assert result.stdout == "".join(tok.stream().iter_text(tokens)) + "\n"
    prompt = len(tok.encode("The king said"))
    assert result.stderr.strip().splitlines()[-1].startswith(f"prompt {prompt} tok · generated 12 tok, ")


def test_generate_output_flags():
    base = ("generate", "-p", "It was", "-n", "300", "--seed", "1", "--no-echo")
    default, quiet, stats = run_cli(*base), run_cli(*base, "-q"), run_cli(*base, "--stats")
    assert default.stdout == quiet.stdout == stats.stdout
    capped = [line for line in default.stderr.splitlines() if "capped" in line]
    assert capped == ["moestream: note: -n 300 capped at 254: the context holds 256 tokens and the prompt takes 2"]
    summary = default.stderr.strip().splitlines()[-1]
    assert summary.startswith("prompt 2 tok · generated 254 tok, ") and " · hit " in summary
    assert "embedded default model" in quiet.stderr and len(quiet.stderr.strip().splitlines()) == 2  # those two notes
    assert "generated: 254 tokens" in stats.stderr and "decode      253 steps" in stats.stderr
    assert "peak RSS" in stats.stderr and "peak RSS" not in default.stderr


@pytest.mark.parametrize("flags, says", [(("-c", "0"), "--ctx-size must be an integer >= 2, got 0"),
                                         (("-c", "1000"), "warning: -c 1000 is beyond the 256 tokens")])
def test_context_flag_is_checked_and_warned(flags, says):
    result = run_cli("generate", "-p", "It was", "-n", "2", *flags)
    assert says in result.stderr


def test_bench_stays_in_the_context():
    too_long = run_cli("bench", "-p", "250", "-n", "10", "--no-warmup")
    assert too_long.returncode != 0 and "needs 260 tokens of context, but the context holds 256" in too_long.stderr
    fitted = run_cli("bench", "-n", "8", "--no-warmup")  # the default prompt shrinks to what the context leaves
    assert fitted.returncode == 0 and "prefill     248 tokens" in fitted.stderr, fitted.stderr


def test_generate_is_reproducible_with_a_seed():
    args = ["generate", "-m", str(gguf_path("olmoe")), "-p", "Hello", "-n", "10", "--temp", "1.0", "--seed", "42"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    other = run_cli(*args[:-1], "43")
    assert other.stdout != first.stdout


def test_chat_answers_lines_from_stdin():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "moestream", "chat", "-m", str(gguf_path("qwen3moe")), "-n", "6", "--temp", "0", "--verbose"],
        input="hello there\nand again\n", capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("generated:") == 2  # one reply per user line
    assert len(result.stdout.strip()) > 0


def test_inspect_defaults_to_the_embedded_model():
    result = run_cli("inspect")
    assert result.returncode == 0 and "tiny-mixtral-novels.gguf" in result.stdout and "embedded" in result.stderr
    assert run_cli("inspect", "-m", str(gguf_path("mixtral"))).stdout.startswith("file ")


def test_trace_labels_each_continuation_and_simulate_aligns(tmp_path):
    out = tmp_path / "t.jsonl"
    traced = run_cli("trace", "-p", "It was", "-p", "The king", "-n", "4", "-o", str(out))
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith("[1] It was") and lines[1].startswith("[2] The king")
    table = run_cli("simulate", str(out), "--budget", "25%", "50%", "2MiB").stdout.splitlines()[1:]
    assert len({len(row) for row in table}) == 1, table  # every row as wide as the header
    assert all(row.split()[-1].endswith("%") for row in table[1:])


def test_an_unknown_flag_shows_the_commands_own_usage():
    result = run_cli("generate", "-p", "x", "--frob")
    assert result.returncode == 2 and result.stderr.startswith("usage: moestream generate")
    assert "unrecognized arguments: --frob" in result.stderr
