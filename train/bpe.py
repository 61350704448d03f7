"""A small byte-level BPE trained with Hugging Face `tokenizers`, in the form llama.cpp's "gpt2" tokenizer reads.

Pre-tokenizer: GPT-2's regex (`tokenizer.ggml.pre = "gpt-2"`), no prefix space; the 256 byte characters are all in
the vocabulary, so any UTF-8 text encodes. One special token, <|endoftext|>, separates books in training and is
the model's BOS/EOS."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"


@dataclass(frozen=True)
class TrainedBPE:
    tokenizer: Tokenizer
    tokens: list[str]  # by id
    merges: list[str]  # "left right", in priority order
    eot_id: int

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids


def train_bpe(texts: list[str], vocab_size: int) -> TrainedBPE:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = spec["vocab"]
    tokens = [""] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    return TrainedBPE(tok, tokens, merges, vocab[EOT])
