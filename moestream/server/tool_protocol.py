"""OpenAI's tool fields in a chat request: `tools`, `tool_choice`, `parallel_tool_calls`, and the messages that
carry calls (an assistant's `tool_calls`) and results (`role: tool`). Validated here, rendered by the chat template.

A tool's `parameters` is a JSON schema (checked by the grammar engine when a call is forced); names follow
OpenAI's rule (letters, digits, '_' and '-', at most 64). A named `tool_choice` must name a given tool, `required`
needs tools, and a `tool` message must answer a call made earlier in the conversation; each is a 400 saying so.
Call arguments arrive as JSON text and are handed to templates decoded (templates write them with `tojson`), as
transformers' and vLLM's renderers do."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .fields import APIError, as_bool, as_list, as_object, as_str, ensure, json_type, read, required

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[dict, ...]  # [{"type": "function", "function": {"name", "description"?, "parameters"?}}]
    choice: str  # "none" | "auto" | "required" | "named"
    name: str | None  # the named tool's name, for choice "named"
    parallel: bool

    @property
    def forced(self) -> bool:
        """A call must come (the grammar enforces it)."""
        return self.choice in ("required", "named")

    def schema_of(self, name: str) -> dict:
        return next(t["function"].get("parameters") or {} for t in self.tools if t["function"]["name"] == name)


def parse_tools(body: dict) -> ToolRequest | None:
    """The request's tools, or None when it has none (or `tool_choice: none` with none given)."""
    tools = tuple(_tool(t, f"tools[{i}]") for i, t in enumerate(read(body, "tools", as_list, [])))
    names = [t["function"]["name"] for t in tools]
    dup = next((n for n in names if names.count(n) > 1), None)
    ensure(dup is None, "tools", f"Invalid 'tools': the function name {dup!r} is given twice.", "invalid_value")
    choice, name = _choice(body.get("tool_choice"), names)
    parallel = read(body, "parallel_tool_calls", as_bool, True)
    if not tools:
        ensure(choice in ("none", "auto"), "tool_choice", "Invalid 'tool_choice': a tool must be called, but the "
               "request gives no 'tools'.", "invalid_value")
        return None
    return ToolRequest(tools, choice, name, parallel)


def _tool(tool: object, label: str) -> dict:
    as_object(tool, label)
    kind = required(tool, "type", as_str, within=label)
    ensure(kind == "function", label, f"Invalid '{label}.type': only 'function' tools are supported, got {kind!r}.",
           "unsupported_value")
    fn = required(tool, "function", as_object, within=label)
    name = required(fn, "name", as_str, within=f"{label}.function")
    ensure(_NAME.fullmatch(name), label, f"Invalid '{label}.function.name': expected 1 to 64 letters, digits, '_' "
           f"or '-', but got {ascii(name[:80])}.", "invalid_value")
    out = {"name": name}
    description = read(fn, "description", as_str, within=f"{label}.function")
    if description is not None:
        out["description"] = description
    parameters = fn.get("parameters")
    if parameters is not None:
        ensure(isinstance(parameters, dict), label, f"Invalid '{label}.function.parameters': expected a JSON schema "
               f"object, but got {json_type(parameters)}.", "invalid_value")
        out["parameters"] = parameters
    return {"type": "function", "function": out}


def _choice(value: object, names: list[str]) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    if isinstance(value, str):
        ensure(value in CHOICES, "tool_choice", f"Invalid 'tool_choice': {value!r} is not one of 'none', 'auto', "
               "'required', or an object naming a function.", "invalid_value")
        return value, None
    as_object(value, "tool_choice")
    kind = required(value, "type", as_str, within="tool_choice")
    ensure(kind == "function", "tool_choice", f"Invalid 'tool_choice.type': expected 'function', got {kind!r}.",
           "invalid_value")
    name = required(required(value, "function", as_object, within="tool_choice"), "name", as_str,
                    within="tool_choice.function")
    ensure(name in names, "tool_choice", f"Invalid 'tool_choice': the function {name!r} is not among the request's "
           f"tools ({', '.join(map(repr, names)) or 'none given'}).", "invalid_value")
    return "named", name


# --- messages --------------------------------------------------------------------------------------------------------

def assistant_calls(message: dict, label: str) -> list[dict]:
    """An assistant message's `tool_calls`, arguments decoded, for the template."""
    calls = read(message, "tool_calls", as_list, [], within=label)
    return [_call(call, f"{label}.tool_calls[{i}]") for i, call in enumerate(calls)]


def _call(call: object, label: str) -> dict:
    as_object(call, label)
    call_id = required(call, "id", as_str, within=label)
    fn = required(call, "function", as_object, within=label)
    name = required(fn, "name", as_str, within=f"{label}.function")
    arguments = required(fn, "arguments", as_str, within=f"{label}.function")
    try:
        decoded = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise APIError(400, f"Invalid '{label}.function.arguments': not JSON ({exc}).", param=label.split("[")[0],
                       code="invalid_value") from None
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": decoded}}


def tool_result(message: dict, label: str, earlier_calls: dict[str, str]) -> dict:
    """A `role: tool` message for the template; its `tool_call_id` must be a call made earlier."""
    call_id = required(message, "tool_call_id", as_str, within=label)
    ensure(call_id in earlier_calls, label, f"Invalid '{label}': a 'tool' message must answer a preceding "
           f"assistant message's tool call, and no call has the id {call_id!r}.", "invalid_value")
    return {"role": "tool", "tool_call_id": call_id, "name": earlier_calls[call_id]}
