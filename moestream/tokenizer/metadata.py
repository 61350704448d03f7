"""Where the tokenizer gets its GGUF metadata from: an open `GGUFFile`, a plain metadata dict, or a path.
Values are plain Python (str, int, float, bool, lists of those), as `GGUFFile.metadata` gives them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import TokenizerError


def metadata_of(source: Any) -> Mapping[str, Any]:
    """The metadata mapping of a `GGUFFile`-like object (has `.metadata`), a mapping, or a GGUF path."""
    if isinstance(source, Mapping):
        return source
    if hasattr(source, "metadata"):
        return source.metadata
    if isinstance(source, (str, os.PathLike)):
        return read_metadata(source)
    raise TokenizerError(f"cannot read tokenizer metadata from {type(source).__name__}: pass a GGUFFile, dict or path")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All key/value pairs of a GGUF file, via the one GGUF parser in moestream.formats."""
    from ..formats.gguf import GGUFFile

    return GGUFFile(path).metadata
