"""Where the tokenizer gets its GGUF metadata from: an open `GGUFFile`, a plain metadata dict, or a path.
Values are plain Python (str, int, float, bool, lists of those), as `GGUFFile.metadata` gives them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import GGUFFormatError, TokenizerError


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
    from ..formats.split import open_gguf

    return open_gguf(path).metadata


# `tokenizer.*` keys whose values must have one Python type (arrays: of one element type) before the tokenizer
# reads them; a file that puts ints in the token list or a string in an id gets an error naming the key, not a
# TypeError deep in vocabulary building.
_ARRAY_TYPES: dict[str, tuple[type, ...]] = {
    "tokenizer.ggml.tokens": (str,),
    "tokenizer.ggml.scores": (float, int),
    "tokenizer.ggml.token_type": (int,),
    "tokenizer.ggml.merges": (str,),
}
_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "tokenizer.ggml.model": (str,),
    "tokenizer.ggml.pre": (str,),
    "tokenizer.chat_template": (str,),
    "tokenizer.ggml.add_bos_token": (bool,),
    "tokenizer.ggml.add_eos_token": (bool,),
    "tokenizer.ggml.add_space_prefix": (bool,),
}


def check_types(meta: Mapping[str, Any]) -> None:
    """Raise GGUFFormatError for a `tokenizer.*` value of the wrong type (ids must be integers, and so on)."""
    for key, value in meta.items():
        if not isinstance(key, str) or not key.startswith("tokenizer."):
            continue
        if key in _ARRAY_TYPES:
            _check_array(key, value, _ARRAY_TYPES[key])
        elif key in _SCALAR_TYPES or key.endswith("_token_id"):
            allowed = _SCALAR_TYPES.get(key, (int,))
            if type(value) not in allowed:
                raise _wrong(key, value, allowed)


def _check_array(key: str, value: Any, allowed: tuple[type, ...]) -> None:
    if not isinstance(value, list):
        raise _wrong(key, value, (list,))
    bad = next((v for v in value if type(v) not in allowed), _NONE)
    if bad is not _NONE:
        raise GGUFFormatError(f"metadata key '{key}' must be an array of {_names(allowed)}, but holds a "
                              f"{type(bad).__name__}")


_NONE = object()


def _wrong(key: str, value: Any, allowed: tuple[type, ...]) -> GGUFFormatError:
    return GGUFFormatError(f"metadata key '{key}' must be {_names(allowed)}, got {type(value).__name__}")


def _names(types: tuple[type, ...]) -> str:
    return " or ".join({"str": "string", "int": "integer", "float": "float", "bool": "boolean",
                        "list": "array"}[t.__name__] for t in types)
