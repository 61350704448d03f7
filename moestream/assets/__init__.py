"""The embedded default model: used by `generate`, `chat` and `bench` when no `-m` is given.

A 7.9M-parameter Mixtral (4 layers, 8 experts, top-2, 4096-token BPE) trained on eight public-domain novels by
`train/train_default_model.py`; see docs/default-model.md for how it was made and how well it does."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

DEFAULT_MODEL = Path(__file__).with_name("tiny-mixtral-novels.gguf")
DESCRIPTION = "a tiny Mixtral trained on eight public-domain novels; it writes 19th-century prose, not answers"


def default_model_path() -> Path:
    if not DEFAULT_MODEL.is_file():
        raise ConfigError(f"no -m given and the embedded default model is missing ({DEFAULT_MODEL}); "
                          "reinstall moestream or pass -m FILE")
    return DEFAULT_MODEL
