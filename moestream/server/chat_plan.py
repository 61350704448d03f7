"""What a chat request turns into before generation: the prompt (tools and template variables rendered by the
GGUF's chat template), the parser its output goes through, and the grammar that forces a tool call.

- Tools are the template's `tools` variable, as transformers renders them. A template that never reads `tools`
  (the embedded model's) would drop them silently, so the server writes them into a system message in the
  Hermes format, the format such templates are parsed with.
- The parser family comes from the template's source (toolformats). It runs when the request has tools (and
  does not say `tool_choice: none`) or when the template writes reasoning blocks; otherwise the text is passed
  through as content. With a parser the text keeps control tokens (harmony's channels are control tokens).
- `thinking`: the rendered prompt ends inside an opened reasoning block, so the reply starts as reasoning.
- A forced call (`tool_choice: required` or named) is the family's call grammar; reasoning is then switched off
  (`enable_thinking: false`) unless the request set it, since the grammar starts the reply with the call."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..engine import Constraint, Engine, GrammarError
from ..errors import ConfigError, MoestreamError
from .fields import APIError
from .protocol import ChatRequest
from .toolformats import OutputParser, parser_class
from .toolformats.hermes import HermesParser

# short: a template that ignores tools is likely a small model's, with a small context
_HERMES_SYSTEM = ("Functions you may call:\n{tools}\nTo call one, reply <tool_call>\n"
                  '{{"name": NAME, "arguments": {{...}}}}\n</tool_call>')


@dataclass
class ChatPlan:
    prompt: list[int]
    parser: OutputParser | None  # None: the reply is plain content
    constraint: Constraint | None  # the grammar that forces a tool call, or None


def capabilities(engine: Engine) -> dict:
    """What /v1/models says the model can do here: tool calls (in which format), reasoning, structured output."""
    template = engine.template
    family = parser_class(None if template.is_default else template.source)
    return {"tools": True, "tool_format": family.family if "tools" in template.source else "hermes (system prompt)",
            "reasoning": _writes_reasoning(template.source, family), "structured_output": True}


def _writes_reasoning(source: str, family: type[OutputParser]) -> bool:
    return family.family == "harmony" or any(open_ in source for open_, _ in family.reasoning_tags)


def plan_chat(parsed: ChatRequest, engine: Engine) -> ChatPlan:
    template, tools = engine.template, parsed.tools
    use_tools = tools is not None and tools.choice != "none"
    family = parser_class(None if template.is_default else template.source)
    kwargs = dict(parsed.template_kwargs)
    if use_tools and tools.forced:
        kwargs.setdefault("enable_thinking", False)
    messages = list(parsed.messages)
    if use_tools and "tools" not in template.source:
        family = HermesParser
        messages = _with_tools_in_system(messages, tools.tools)
    render_tools = list(tools.tools) if use_tools else None
    prompt, text = _encode(engine, messages, render_tools, kwargs)
    reasoning = _writes_reasoning(template.source, family)
    parser = None
    if use_tools or reasoning:
        parser = family(list(tools.tools) if use_tools else None, thinking=_opened_reasoning(text, family))
    constraint = _forced_call(family, tools, engine) if use_tools and tools.forced else None
    return ChatPlan(prompt, parser, constraint)


def _encode(engine: Engine, messages: list[dict], tools: list[dict] | None, kwargs: dict) -> tuple[list[int], str]:
    try:
        ids = engine.encode_chat(messages, tools=tools, **kwargs)
        return ids, engine.template.render(messages, tools=tools, **kwargs)
    except MoestreamError as exc:
        raise APIError(400, f"cannot apply the chat template: {exc}", param="messages") from None


def _with_tools_in_system(messages: list[dict], tools: tuple[dict, ...]) -> list[dict]:
    listing = "\n".join(json.dumps(t["function"], ensure_ascii=False, separators=(",", ":")) for t in tools)
    note = _HERMES_SYSTEM.format(tools=listing)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _opened_reasoning(prompt_text: str, family: type[OutputParser]) -> bool:
    tail = prompt_text.rstrip()
    return any(tail.endswith(open_) for open_, _ in family.reasoning_tags)


def _forced_call(family: type[OutputParser], tools, engine: Engine) -> Constraint:
    """The family's call grammar; markers the vocabulary holds as single tokens are written as those tokens."""
    tok = engine.tokenizer
    special = {m: tok.token_to_id(m) for m in family.grammar_markers if tok.token_to_id(m) is not None}
    try:
        return engine.grammar.compile(family.call_grammar(list(tools.tools), tools.name, tools.parallel, special))
    except (GrammarError, ConfigError) as exc:  # a tool schema the engine cannot compile is the client's error
        raise APIError(400, f"Invalid 'tools': cannot enforce a call to these tools: {exc}", param="tools",
                       code="invalid_tool_schema") from None
