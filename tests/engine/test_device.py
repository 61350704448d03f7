"""--device and --vram-budget: checked before loading, each refusal one line (fixed card sizes; no GPU here)."""

from __future__ import annotations

import pytest

from moestream.assets import default_model_path
from moestream.engine import resolve_device
from moestream.errors import ConfigError
from tests.cli.test_bad_input import assert_one_line_error, run_cli

GIB = 1 << 30


def test_auto_and_cpu_are_the_cpu():
    assert resolve_device("auto", None, card=None) == "cpu"
    assert resolve_device("cpu", None, card=None) == "cpu"
    assert resolve_device("auto", None, card=80 * GIB) == "cpu"  # the GPU tier does not run yet


@pytest.mark.parametrize("device, budget, card, needle", [
    ("cuda", None, None, "there is no CUDA device here"),
    ("auto", 4 * GIB, None, "--vram-budget needs a CUDA device"),
    ("cuda", 100 * GIB, 80 * GIB, "--vram-budget 100.00 GiB is more than the card's 80.00 GiB"),
    ("cuda", 20 * GIB, 80 * GIB, "the GPU tier is not in this build yet"),
    ("tpu", None, None, "--device must be one of auto, cpu, cuda"),
])
def test_refusals(device, budget, card, needle):
    with pytest.raises(ConfigError) as err:
        resolve_device(device, budget, card=card)
    assert needle in str(err.value)


def test_the_cli_says_it_in_one_line():
    model = str(default_model_path())
    assert_one_line_error(run_cli("generate", "-m", model, "-p", "hi", "--device", "cuda"), "no CUDA device")
    assert_one_line_error(run_cli("generate", "-m", model, "-p", "hi", "--vram-budget", "4GiB"),
                          "--vram-budget needs a CUDA device")
