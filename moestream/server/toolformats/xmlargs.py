"""Arguments written as XML-ish parameters (Qwen3-Coder's <parameter=K>V</parameter>, GLM's <arg_key>/<arg_value>)
turned into the JSON object a client expects, one parameter at a time as each is complete.

A value is raw text; the tool's JSON schema says what it is. A parameter that may be a string (or that the
schema does not describe) is the text itself. Numbers, booleans, objects and arrays are parsed (templates render
them with `tojson`, or with Python's `str`, hence True/False/None are accepted too); a value that does not parse
as the schema's type stays a string, so nothing the model wrote is lost.

For grammars, `value_items` gives the Lark for one value of a parameter: free text for strings (and for
parameters without a type), `%json` of the parameter's schema for the rest.
"""

from __future__ import annotations

import json
from typing import Any

from . import grammar as g

_PARSED = {"integer", "number", "object", "array"}
_PYTHON_WORDS = {"true": True, "false": False, "none": None, "null": None}


def schema_types(schema: Any) -> set[str]:
    """The JSON types a schema allows ('type' as a string or list, or those of its anyOf/oneOf branches)."""
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    types = {t for t in kinds if isinstance(t, str)}
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        types |= schema_types(branch)
    return types


def value_json(raw: str, schema: Any) -> str:
    """JSON text for the raw value of a parameter with this schema."""
    types = schema_types(schema)
    if not types or "string" in types:  # text is always a valid string: keep what the model wrote
        return json.dumps(raw, ensure_ascii=False)
    word = raw.strip().lower()
    if "boolean" in types and word in ("true", "false"):
        return word
    if "null" in types and word in ("null", "none"):
        return "null"
    if types & _PARSED:
        parsed = _parse(raw, types)
        if parsed is not None:
            return json.dumps(parsed, ensure_ascii=False)
    return json.dumps(raw, ensure_ascii=False)


def _parse(raw: str, types: set[str]) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    kinds = {"integer": int, "number": (int, float), "object": dict, "array": list}
    fits = any(isinstance(value, kinds[t]) and not isinstance(value, bool) for t in types & _PARSED)
    return value if fits else None


class ArgsWriter:
    """Writes the arguments object in pieces: '{"a": 1', ', "b": "x"', ... and '}' at the end."""

    def __init__(self, function: dict | None):
        schema = (function or {}).get("parameters")
        properties = schema.get("properties") if isinstance(schema, dict) else None
        self._properties = properties if isinstance(properties, dict) else {}
        self._count = 0

    def param(self, key: str, raw: str) -> str:
        piece = ("{" if not self._count else ", ") + json.dumps(key, ensure_ascii=False) + ": "
        self._count += 1
        return piece + value_json(raw, self._properties.get(key))

    def close(self) -> str:
        return "}" if self._count else "{}"


def value_items(rule: str, schema: Any, end: str, special: dict[str, int] | None) -> tuple[str, list[str]]:
    """(Lark items, extra rules) for one value followed by the marker `end`."""
    types = schema_types(schema)
    if not types or "string" in types:
        items, definition = g.text_until(rule, end, special)
        return items, [definition]
    choices = [g.json_value(schema)]
    if "boolean" in types:
        choices += [g.literal("True"), g.literal("False")]
    if "null" in types:
        choices.append(g.literal("None"))
    return f"{rule} {g.token(end, special)}", [f"{rule}: " + " | ".join(choices)]


def params_items(prefix: str, function: dict, item: Any) -> tuple[str, list[str]]:
    """(Lark items, extra rules) for all parameters in schema order, optional ones optional. `item(key, value_rule,
    schema)` gives one parameter's (items, rules)."""
    schema = g.parameters(function)
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    parts, rules = [], []
    for j, (key, prop) in enumerate(properties.items()):
        items, extra = item(key, f"{prefix}_{j}", prop)
        rules += [f"{prefix}_{j}_param: {items}", *extra]
        parts.append(f"{prefix}_{j}_param" + ("" if key in required else "?"))
    return " ".join(parts), rules
