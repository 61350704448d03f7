"""Token-for-token parity with llama.cpp's tokenizer test vectors (`models/ggml-vocab-NAME.gguf.inp/.out`).

The vectors were produced with each model's HF tokenizer and are what llama.cpp's `test-tokenizer-0` checks:
every input string encoded without BOS/EOS and without special-token parsing must give exactly the listed ids.
We also check that decoding the ids gives the string back, and that the stream decoder agrees.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import tokenizers

from moestream.formats.gguf import GGUFFile
from moestream.tokenizer import StreamDecoder, Tokenizer
from moestream.tokenizer.metadata import read_metadata
from tests.fixtures.llama_cpp import vocab_file

# The brief's five, then further vocabularies whose pre-tokenizers we support and whose vectors pass.
REQUIRED = ["llama-spm", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm"]
EXTRA = ["deepseek-coder", "falcon", "starcoder", "refact", "mpt", "qwen35", "phi-3", "command-r"]

SEPARATOR = "\n__ggml_vocab_test__\n"


def read_vectors(gguf_path: Path) -> list[tuple[str, list[int]]]:
    """(input, ids) pairs, split exactly as test-tokenizer-0.cpp does: the .inp is cut at every
    "\\n__ggml_vocab_test__\\n" (so an empty input between two separators is a test case, while the separator
    that ends the file does not start another one); line i of the .out holds the ids of input i."""
    # Bytes, then decode: text mode would translate '\r' in the inputs.
    raw = Path(f"{gguf_path}.inp").read_bytes().decode("utf-8")
    inputs: list[str] = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(SEPARATOR, pos)
        if nxt < 0:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(SEPARATOR)
    lines = Path(f"{gguf_path}.out").read_bytes().decode("utf-8").split("\n")
    outputs = [[int(x) for x in line.split()] for line in lines]
    # `getline` yields no entry after a final newline; both files must describe the same number of cases.
    if lines and lines[-1] == "":
        outputs.pop()
    assert len(inputs) == len(outputs), f"{gguf_path.name}: {len(inputs)} inputs but {len(outputs)} output lines"
    return list(zip(inputs, outputs))


def describe(tok: Tokenizer, ids: list[int]) -> str:
    return " ".join(f"{i}:{tok.token_text(i)!r}" for i in ids)


def check_encoding(tok: Tokenizer, cases, parse_special: bool) -> list[str]:
    failures = []
    for text, expected in cases:
        got = tok.encode(text, add_bos=False, parse_special=parse_special)
        if got != expected:
            failures.append(
                f"input {text!r} (parse_special={parse_special})\n"
                f"    expected {describe(tok, expected)}\n"
                f"    got      {describe(tok, got)}"
            )
    return failures


@pytest.mark.parametrize("name", REQUIRED + EXTRA)
def test_encode_matches_llama_cpp_vectors(name, load_tokenizer):
    tok = load_tokenizer(name)
    cases = read_vectors(vocab_file(name))
    assert len(cases) > 30, f"{name}: only {len(cases)} test vectors parsed"
    # parse_special=False is llama.cpp's test setting; the inputs contain no control-token text, so the
    # default (parse_special=True) must agree.
    failures = check_encoding(tok, cases, parse_special=False) + check_encoding(tok, cases, parse_special=True)
    assert not failures, f"{name}: {len(failures)} mismatches\n" + "\n".join(failures)


@pytest.mark.parametrize("name", REQUIRED + EXTRA)
def test_decode_round_trips(name, load_tokenizer):
    tok = load_tokenizer(name)
    failures = []
    for text, ids in read_vectors(vocab_file(name)):
        # decode() removes the SPM space prefix that encode() added (llama.cpp's detokenizer strips it too).
        decoded = tok.decode(ids)
        if decoded != text:
            failures.append(f"ids {ids} decode to {decoded!r}, expected {text!r}")
        # The stream decoder emits pieces verbatim, so for SPM the prefix space is still there.
        streamed = "".join(StreamDecoder(tok, skip_special=False).iter_text(ids))
        want = " " + text if tok.add_space_prefix and text else text
        if streamed != want:
            failures.append(f"ids {ids} stream to {streamed!r}, expected {want!r}")
    assert not failures, f"{name}: {len(failures)} round-trip failures\n" + "\n".join(failures)


@pytest.mark.parametrize("name", ["llama-spm", "qwen2"])
def test_metadata_matches_the_gguf_package_reader(name):
    """Our fast header walk returns what the `gguf` package's reader returns, key by key."""
    import gguf as gguf_package

    path = vocab_file(name)
    ours = read_metadata(path)
    reader = gguf_package.GGUFReader(path)
    theirs = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if ours[k] != theirs[k]]
    assert not different, f"values differ for keys {different}"
    if name == "llama-spm":
        tok = Tokenizer.from_gguf(GGUFFile(path))
        assert tok.encode(" Hello world", add_bos=False) == [29871, 15043, 3186]


# The regexes as written in the models' tokenizer.json (HF semantics, case-insensitive contractions).
HF_SPLIT_REGEX = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+",
}


def random_texts(count: int, seed: int) -> list[str]:
    """Mixed-script strings with the things pre-tokenizers care about: contractions, digit runs, runs of
    spaces/newlines/CR, non-ASCII spaces, combining marks, ZWJ emoji, CJK."""
    rng = random.Random(seed)
    chars = list("abcXYZ0123456789.,!?'\"-\n\t\r  ") + list("éüßñ中文日本語한국어🦙😀ёж€\u00a0\u3000\u200d\u0301")
    words = ["Hello", " world", "'s", "'LL", " 'Re", "  ", "\n\n", " \n ", "нещо", "工作", "1234567", "...", "<|"]
    return [
        "".join(rng.choice(chars) if rng.random() < 0.6 else rng.choice(words) for _ in range(rng.randint(1, 25)))
        for _ in range(count)
    ]


@pytest.mark.parametrize("name", sorted(HF_SPLIT_REGEX))
def test_random_text_matches_hf_tokenizers(name, load_tokenizer):
    """Beyond the fixed vectors: an HF `tokenizers` BPE built from the same GGUF vocab/merges with the model's
    original split regex must agree on random text."""
    meta = read_metadata(vocab_file(name))
    vocab = {text: i for i, text in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, ignore_merges=name == "llama-bpe"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(HF_SPLIT_REGEX[name]), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok = load_tokenizer(name)
    failures = []
    for text in random_texts(300, seed=7):
        ours = tok.encode(text, add_bos=False, parse_special=False)
        theirs = hf.encode(text, add_special_tokens=False).ids
        if ours != theirs:
            failures.append(f"{text!r}\n    ours   {describe(tok, ours)}\n    theirs {describe(tok, theirs)}")
    assert not failures, f"{name}: {len(failures)} mismatches\n" + "\n".join(failures[:10])


# gpt-oss's o200k pre-tokenizer ("gpt-4o"), as its tokenizer.json writes the split regex
GPT4O_SPLIT_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def test_gpt4o_pre_tokenizer_matches_hf_tokenizers_on_random_text(tmp_path):
    """No vocab file of llama.cpp's has the `gpt-4o` pre type: Llama 3's vocabulary and merges with the pre name
    changed, against an HF `tokenizers` BPE of the same vocabulary split by o200k's regex."""
    from tests.fixtures.gguf_edit import copy_gguf

    def gpt4o(meta):
        meta = dict(meta)
        meta["tokenizer.ggml.pre"] = ("gpt-4o", *meta["tokenizer.ggml.pre"][1:])
        return meta

    path = copy_gguf(vocab_file("llama-bpe"), tmp_path / "gpt4o.gguf", edit_metadata=gpt4o)
    meta = read_metadata(path)
    vocab = {text: i for i, text in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(GPT4O_SPLIT_REGEX), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok = Tokenizer.from_gguf(GGUFFile(path))
    texts = random_texts(300, seed=11) + ["HelloWorld's CamelCase", "price: 1234567 /path/to\n\nx", "I'M here"]
    failures = [t for t in texts if tok.encode(t, add_bos=False, parse_special=False)
                != hf.encode(t, add_special_tokens=False).ids]
    assert not failures, f"{len(failures)} mismatches, e.g. {failures[:5]}"
