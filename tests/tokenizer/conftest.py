"""Shared, cached tokenizers for the llama.cpp test vocabularies (loading one takes up to ~1 s)."""

from __future__ import annotations

import functools

import pytest

from moestream.tokenizer import Tokenizer
from tests.fixtures.llama_cpp import vocab_file


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Tokenizer:
    # From the path: the tokenizer's own metadata reader is ~50x faster than GGUFFile on big vocabularies.
    return Tokenizer.from_gguf(vocab_file(name))


@pytest.fixture(scope="session")
def load_tokenizer():
    """`load_tokenizer("qwen2")` -> Tokenizer for models/ggml-vocab-qwen2.gguf, built once per session."""
    return _load
