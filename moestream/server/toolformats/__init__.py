"""Model output -> events (content, reasoning, tool calls), one parser per chat-format family, and the grammar
that forces a tool call in that family's format.

The family is read off the chat template's source: the markers a template writes for tool calls are the ones
the model was trained to produce. Checks go from the most specific marker to the least (Qwen3-Coder's and GLM's
templates also write <tool_call>, so they come before Hermes); a template that reveals nothing, or no template,
gets Hermes, the most common format.

    parser = parser_class(template_source)(tools, thinking=prompt_opened_think)
    for chunk in stream: events = parser.feed(chunk)
    events = parser.finish()
"""

from __future__ import annotations

from .base import OutputParser
from .deepseek_v3 import DeepSeekV3Parser
from .events import CallAbandoned, CallArgs, CallEnd, CallStart, Event, Reasoning, Text
from .glm45 import Glm45Parser
from .harmony import HarmonyParser
from .hermes import HermesParser
from .llama3 import Llama3Parser
from .mistral import MistralParser
from .qwen3_coder import Qwen3CoderParser

FAMILIES: dict[str, type[OutputParser]] = {cls.family: cls for cls in (
    HermesParser, Qwen3CoderParser, MistralParser, Llama3Parser, DeepSeekV3Parser, HarmonyParser, Glm45Parser)}

# (family, markers that must all appear in the template), most specific first.
_DETECTION: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("harmony", ("<|channel|>", "<|message|>")),
    ("deepseek_v3", ("<｜tool▁call▁begin｜>",)),
    ("mistral", ("[TOOL_CALLS]",)),
    ("glm45", ("<arg_key>", "<arg_value>")),
    ("qwen3_coder", ("<function=", "<parameter=")),
    ("hermes", ("<tool_call>",)),
    ("llama3", ("<|start_header_id|>", '"parameters"')),
)


def parser_class(template_source: str | None) -> type[OutputParser]:
    """The parser for the format the chat template writes tool calls in."""
    for family, markers in _DETECTION:
        if template_source and all(marker in template_source for marker in markers):
            return FAMILIES[family]
    return HermesParser


__all__ = ["FAMILIES", "OutputParser", "parser_class", "Event", "Text", "Reasoning", "CallStart", "CallArgs",
           "CallEnd", "CallAbandoned"]
