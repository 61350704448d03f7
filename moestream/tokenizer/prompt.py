"""A conversation -> prompt token ids, with control tokens only where the chat template put them.

Message content is user text: '<|im_end|>', '</s>' or '[INST]' typed into a message are tokenized as the plain
text they are, never as the control tokens that end a turn or start one (turn injection). The template's own
text is tokenized with control tokens parsed, as llama.cpp and transformers do for the whole prompt. Without any
such text in the content the ids are exactly those of encoding the rendered prompt whole.

When a template transforms content so that its parts cannot be told apart (see `ChatTemplate.render_parts`), the
prompt is encoded whole as before, unless some content holds control-token text: that is refused, since there is
no safe way to encode it with that template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TokenizerError
from .chat import ChatTemplate
from .tokenizer import Tokenizer


def encode_chat(tok: Tokenizer, template: ChatTemplate, messages: Sequence[Mapping[str, Any]],
                add_generation_prompt: bool = True, **kwargs: Any) -> list[int]:
    """Prompt ids for `messages`; BOS as the model wants it, unless the template already wrote it."""
    parts = template.render_parts(messages, add_generation_prompt, **kwargs)
    if parts is None:
        _refuse_control_text(tok, messages)
        parts = [(template.render(messages, add_generation_prompt, **kwargs), True)]
    ids = tok.encode_parts(parts, add_bos=None)
    if len(ids) > 1 and ids[0] == ids[1] == tok.bos_id:
        ids = ids[1:]
    return ids


def _refuse_control_text(tok: Tokenizer, messages: Sequence[Mapping[str, Any]]) -> None:
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str) and tok.has_control_text(content):
            raise TokenizerError(f"message {i} contains the text of a control token, and this chat template "
                                 "changes message content in a way that cannot be kept apart from its own "
                                 "control tokens; remove the control-token text from the message")
