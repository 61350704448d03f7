"""Behaviour around the model tokenizers: BOS defaults, special-token parsing, EOG ids, token bytes, streaming,
and the errors for unsupported metadata."""

from __future__ import annotations

import pytest

from moestream.errors import TokenizerError
from moestream.tokenizer import StreamDecoder, Tokenizer


def test_bos_follows_gguf_default(load_tokenizer):
    spm, llama3, qwen2 = load_tokenizer("llama-spm"), load_tokenizer("llama-bpe"), load_tokenizer("qwen2")
    assert spm.encode("Hello")[0] == spm.bos_id == 1  # add_bos_token = true
    assert llama3.encode("Hi") == [128000, 13347]  # Llama 3 pre-tokenizer: BOS on by default
    assert qwen2.encode("Hi") == [13048]  # no add_bos_token key: off for BPE
    assert qwen2.encode("Hi", add_bos=True) == [qwen2.bos_id, 13048]
    assert spm.encode("Hello", add_bos=False) == [15043]
    assert spm.encode("Hello", add_bos=False, add_eos=True) == [15043, spm.eos_id]


def test_control_tokens_are_split_only_with_parse_special(load_tokenizer):
    tok = load_tokenizer("qwen2")
    text = "<|im_start|>user\nHi<|im_end|>"
    ids = tok.encode(text)
    assert ids == [151644, 872, 198, 13048, 151645]
    assert 151644 not in tok.encode(text, parse_special=False)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special=True) == "user\nHi"


def test_spm_space_prefix_after_special_token(load_tokenizer):
    """llama.cpp adds the SentencePiece space prefix to text following a special token; decode undoes it."""
    tok = load_tokenizer("llama-spm")
    hello = tok.token_to_id("▁Hello")
    assert tok.encode("<s>Hello</s>", add_bos=False) == [1, hello, 2]
    assert tok.decode([1, hello, 2]) == "<s>Hello</s>"
    assert tok.decode([1, hello, 2], skip_special=True) == "Hello"


def test_spm_byte_fallback_and_token_bytes(load_tokenizer):
    tok = load_tokenizer("llama-spm")
    ids = tok.encode("🦙", add_bos=False)
    assert [tok.token_text(i) for i in ids] == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    assert b"".join(tok.token_bytes(i) for i in ids) == " 🦙".encode()
    assert tok.token_bytes(tok.token_to_id("<0x0A>")) == b"\n"
    assert tok.token_bytes(tok.token_to_id("▁Hello")) == b" Hello"


def test_bpe_token_bytes_undo_gpt2_byte_mapping(load_tokenizer):
    tok = load_tokenizer("gpt-2")
    assert tok.token_bytes(tok.token_to_id("Ġworld")) == b" world"
    assert tok.token_bytes(tok.token_to_id("Ċ")) == b"\n"
    assert tok.vocab_size == 50257


def test_eog_ids(load_tokenizer):
    llama3 = load_tokenizer("llama-bpe")
    assert {llama3.token_text(i) for i in llama3.eog_ids} == {"<|end_of_text|>", "<|eot_id|>"}
    qwen2 = load_tokenizer("qwen2")
    assert {151643, 151645} <= qwen2.eog_ids  # <|endoftext|> (eos) and <|im_end|> (found by its text)
    assert load_tokenizer("llama-spm").eog_ids == {2}


def test_stream_decoder_holds_back_partial_utf8(load_tokenizer):
    tok = load_tokenizer("llama-spm")
    ids = tok.encode("🦙!", add_bos=False)  # '▁', four byte tokens, '!'
    stream = StreamDecoder(tok)
    pieces = [stream.push(i) for i in ids]
    assert pieces == [" ", "", "", "", "🦙", "!"]
    assert not stream.pending()
    stream.push(tok.token_to_id("<0xF0>"))
    assert stream.pending()
    assert stream.flush() == "\ufffd"  # an unfinished character at the end becomes U+FFFD


def test_stream_decoder_skips_control_tokens(load_tokenizer):
    tok = load_tokenizer("qwen2")
    ids = tok.encode("<|im_start|>assistant\nHello 🦙<|im_end|>")
    assert "".join(tok.stream().iter_text(ids)) == "assistant\nHello 🦙"
    assert "".join(StreamDecoder(tok, skip_special=False).iter_text(ids)).startswith("<|im_start|>")


def test_out_of_range_id_is_a_tokenizer_error(load_tokenizer):
    tok = load_tokenizer("gpt-2")
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([50257])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.token_bytes(-1)


def _tiny_bpe(**extra):
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": ["a", "b", "ab", "<|endoftext|>"],
        "tokenizer.ggml.token_type": [1, 1, 1, 3],
        "tokenizer.ggml.merges": ["a b"],
        "tokenizer.ggml.eos_token_id": 3,
    }
    meta.update(extra)
    return meta


def test_tiny_bpe_from_metadata_dict():
    tok = Tokenizer.from_gguf(_tiny_bpe())
    assert tok.encode("abab<|endoftext|>") == [2, 2, 3]
    assert tok.eog_ids == {3}


def test_unknown_model_is_a_tokenizer_error():
    with pytest.raises(TokenizerError, match=r"tokenizer.ggml.model = 'bert'.*supported: llama, gpt2"):
        Tokenizer.from_gguf(_tiny_bpe(**{"tokenizer.ggml.model": "bert"}))


def test_unknown_pre_tokenizer_is_a_tokenizer_error():
    with pytest.raises(TokenizerError, match=r"tokenizer.ggml.pre = 'tekken'.*supported: .*qwen2"):
        Tokenizer.from_gguf(_tiny_bpe(**{"tokenizer.ggml.pre": "tekken"}))


def test_missing_tokenizer_metadata_is_a_tokenizer_error():
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model"):
        Tokenizer.from_gguf({"general.architecture": "llama"})
    with pytest.raises(TokenizerError, match="merges"):
        Tokenizer.from_gguf(_tiny_bpe(**{"tokenizer.ggml.merges": []}))


def test_harmony_vocab_follows_llama_cpp_workarounds():
    """gpt-oss: `<|end|>` closes a message, not the generation; structure tokens stay visible when specials are
    skipped (llama.cpp makes them user-defined)."""
    texts = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|endoftext|>"]
    tok = Tokenizer.from_gguf(_tiny_bpe(**{
        "tokenizer.ggml.tokens": ["a", "b", "ab", *texts],
        "tokenizer.ggml.token_type": [1, 1, 1] + [3] * len(texts),
        "tokenizer.ggml.eos_token_id": 8,
    }))
    ids = {text: tok.token_to_id(text) for text in texts}
    assert tok.eog_ids == {ids["<|return|>"], ids["<|call|>"], ids["<|endoftext|>"]}
    encoded = tok.encode("<|start|>ab<|channel|>a<|end|><|return|>")
    assert tok.decode(encoded, skip_special=True) == "<|start|>ab<|channel|>a<|end|>"
