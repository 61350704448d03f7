"""Tokenizers read from GGUF metadata (SentencePiece-style and byte-level BPE, llama.cpp semantics), streaming
detokenization, and chat-template rendering."""

from .chat import ChatTemplate
from .prompt import encode_chat
from .stream import StreamDecoder
from .tokenizer import Tokenizer

__all__ = ["ChatTemplate", "StreamDecoder", "Tokenizer", "encode_chat"]
