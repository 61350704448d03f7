"""Malformed files and unsupported content give a one-line error naming the problem and a non-zero exit."""

from __future__ import annotations

import subprocess

import gguf
import numpy as np
import pytest

from tests.fixtures.cli_process import run_moestream
from tests.fixtures.gguf_edit import copy_gguf, set_tensor_offset
from tests.fixtures.tiny_models import gguf_path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m moestream ARGS`, in a child forked with the CLI imported (tests/fixtures/cli_process.py)."""
    return run_moestream(list(args), timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def good() -> bytes:
    return gguf_path("qwen2moe").read_bytes()


@pytest.mark.parametrize("command", ["inspect", "generate"])
def test_truncated_file(tmp_path, good, command):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(good[: len(good) // 2])
    args = [str(bad)] if command == "inspect" else ["-m", str(bad), "-p", "hi", "-n", "2"]
    assert_one_line_error(run_cli(command, *args), "truncated.gguf", "file has only")


def test_truncated_inside_header(tmp_path, good):
    bad = tmp_path / "header.gguf"
    bad.write_bytes(good[:200])
    assert_one_line_error(run_cli("inspect", str(bad)), "header.gguf", "truncated")


def test_wrong_magic(tmp_path, good):
    bad = tmp_path / "magic.gguf"
    bad.write_bytes(b"GGML" + good[4:])
    assert_one_line_error(run_cli("inspect", str(bad)), "not a GGUF file", "GGML")


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("inspect", str(tmp_path / "nope.gguf")), "no such file")


def test_tensor_offset_past_eof(tmp_path):
    bad = copy_gguf(gguf_path("qwen2moe"), tmp_path / "offset.gguf")
    set_tensor_offset(bad, "blk.1.attn_q.weight", 1 << 40)
    assert_one_line_error(run_cli("inspect", str(bad)), "blk.1.attn_q.weight", "file has only")


def test_unknown_architecture(tmp_path):
    def rename(meta):
        meta = {k.replace("qwen2moe.", "frobnicator."): v for k, v in meta.items()}
        meta["general.architecture"] = ("frobnicator", *meta["general.architecture"][1:])
        return meta

    bad = copy_gguf(gguf_path("qwen2moe"), tmp_path / "arch.gguf", edit_metadata=rename)
    assert_one_line_error(run_cli("generate", "-m", str(bad), "-p", "hi"), "frobnicator", "not supported", "qwen3moe")


def test_unsupported_quant_type(tmp_path):
    iq4_nl = gguf.GGMLQuantizationType.IQ4_NL

    def retype(items):
        for name, data, qtype in items:
            if name == "blk.0.attn_q.weight":  # [64, 64] F32 -> IQ4_NL: 2 blocks of 18 bytes per row
                data, qtype = np.random.default_rng(0).integers(0, 255, (64, 36), dtype=np.uint8), iq4_nl
            yield name, data, qtype

    bad = copy_gguf(gguf_path("qwen2moe"), tmp_path / "qtype.gguf", edit_tensors=retype)
    assert_one_line_error(run_cli("inspect", str(bad)), "blk.0.attn_q.weight", "IQ4_NL", "not support")


def test_invalid_sampling_flag(tmp_path):
    result = run_cli("generate", "-m", str(gguf_path("qwen2moe")), "-p", "hi", "--top-p", "1.5")
    assert_one_line_error(result, "top_p")
