"""A dense Llama (GGUF `llama` without experts) as a user runs it: `moestream generate` writes transformers'
greedy continuation, loads no expert cache, and its summary says the model is dense. (Logits and Q8_0 parity are
in test_hf_parity.py, which runs every entry of CONFIGS, this one included.)"""

from __future__ import annotations

import json

from moestream.engine.loader import load_model
from moestream.tokenizer import Tokenizer
from tests.cli.test_bad_input import run_cli
from tests.fixtures.tiny_models import gguf_path, load_hf_model
from tests.models.test_hf_parity import hf_greedy

PROMPT = "The king said"


def test_generate_cli_writes_the_transformers_greedy_continuation(tmp_path):
    path = gguf_path("llama")
    lm = load_model(path, progress=False)
    assert lm.args.n_experts == 0 and lm.experts is None and lm.cache is None
    tok = Tokenizer.from_gguf(lm.gguf)
    expected = hf_greedy(load_hf_model("llama"), tok.encode(PROMPT), 12)
    stats = tmp_path / "stats.json"
    result = run_cli("generate", "-m", str(path), "-p", PROMPT, "-n", "12", "--temp", "0", "--no-echo",
                     "--stats", "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(tok.stream().iter_text(expected)) + "\n"
    assert "generated: 12 tokens" in result.stderr and "no experts (dense model)" in result.stderr
    s = json.loads(stats.read_text())
    assert s["expert_bytes"] == 0 and "lookups" not in s and s["decode_tokens"] == 11
