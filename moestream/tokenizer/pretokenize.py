"""Pre-tokenizer regexes for byte-level BPE, chosen by `tokenizer.ggml.pre` exactly as llama.cpp does.

A pre-tokenizer is a list of regexes applied in sequence: each one splits every current fragment into its matches
*and* the text between matches (kept as fragments of their own), and the next regex refines those fragments.
llama.cpp hand-codes the common single-regex cases (GPT-2, Llama 3, Qwen2) and runs the rest through std::regex
on a category-collapsed copy of the text; both reproduce what the regexes below mean with full Unicode
properties, which the `regex` package gives us directly (checked against the llama.cpp test vectors and, on
random text, against HF `tokenizers`). Patterns are llama.cpp's, except that `$` is written `\\Z` (Python's `$`
also matches before a final newline, ECMAScript's does not) and non-ASCII characters are written as escapes.

Only pre types whose llama.cpp test vectors we check are listed, plus other names llama.cpp maps to those same
types; add further types together with their vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from ..errors import TokenizerError

# 's|'t|... | ?\p{L}+ | ?\p{N}+ | ?punct+ | whitespace not followed by non-space | whitespace.
# (llama.cpp lists it without the final `|\s+`, but its hand-written matcher implements that branch too.)
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Llama 3: case-insensitive contractions, a letter run with one optional leading non-letter/digit, digits in
# groups of up to three, punctuation runs absorbing trailing newlines, newline runs with leading spaces.
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2: as Llama 3 but every digit is its own pre-token.
QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GPT-4o's o200k (gpt-oss, Llama 4): letters split at case changes, contractions attached, digits in threes, as
# tokenizer.json has it
GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3.5: as Qwen2 but letter runs also take combining marks (\p{M}).
QWEN35 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# CJK ideographs, U+0800..U+4E00 (many scripts, kana included) and Hangul, as DeepSeek's tokenizer.json has them.
# Non-ASCII characters are written as escapes: editors and copy/paste may NFC-normalize literal Greek letters.
CJK_HANGUL = r"[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"

# DeepSeek LLM (V1/V2): newlines alone, Latin/Greek/Cyrillic/... letter runs and ASCII/full-width punctuation
# runs with one optional leading space, trailing whitespace, CJK/Hangul runs, digit runs.
DEEPSEEK_LLM = [
    "[\r\n]",
    (
        r"\s?[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377"
        r"\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f"
        r"\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
        r"\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d"
        r"\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb"
        r"\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128"
        r"\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4"
        r"\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
        r"\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
        r"\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
        r"\U0001e900-\U0001e943]+"
    ),
    r"\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    r"\s+\Z",
    CJK_HANGUL,
    r"\p{N}+",
]

DEEPSEEK_CODER = [
    "[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    CJK_HANGUL,
    r"\p{N}",
]

# DeepSeek-V3/R1 (llama.cpp's DEEPSEEK3_LLM): digits in threes, CJK runs, then words with their marks, and
# punctuation runs that may take a letter run after them
DEEPSEEK_V3 = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
    r"""| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]

FALCON = [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]

# StarCoder family: every digit alone, then GPT-2.
STARCODER = [r"\p{N}", GPT2]

# llama.cpp's fallback for pre type "default" (and a missing `tokenizer.ggml.pre`).
DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]

@dataclass(frozen=True)
class PreTokenizer:
    """One llama.cpp pre type: its regexes plus the two flags llama.cpp ties to it."""

    patterns: tuple[str, ...]
    ignore_merges: bool = False  # a pre-token that is itself a vocabulary entry skips BPE (HF's ignore_merges)
    add_bos: bool = False  # llama.cpp's default when the GGUF has no tokenizer.ggml.add_bos_token
    bos: bool = True  # False: never a BOS, whatever the GGUF says (llama.cpp drops GLM-4's bos id)

    def compile(self) -> list[regex.Pattern]:
        return [regex.compile(p) for p in self.patterns]


_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer((QWEN2,))
_GPT2 = PreTokenizer((GPT2,))
_STARCODER = PreTokenizer(tuple(STARCODER))

# `tokenizer.ggml.pre` value -> pre-tokenizer, following llama.cpp's name -> pre type mapping. Besides the types
# with test vectors, only other names llama.cpp maps to one of those same types (identical regexes and flags).
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer(tuple(DEFAULT)),
    **dict.fromkeys(
        ("llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"), _LLAMA3
    ),
    "dbrx": PreTokenizer((LLAMA3,)),  # Llama 3 regex without Llama 3's flags
    "smaug-bpe": PreTokenizer((LLAMA3,)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2"), _QWEN2),
    "qwen35": PreTokenizer((QWEN35,)),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie"), PreTokenizer((GPT4O,))),
    **dict.fromkeys(("gpt-2", "mpt", "olmo", "phi-2", "gigachat", "a.x-4.0", "mellum", "exaone4"), _GPT2),
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"), _STARCODER),
    "deepseek-llm": PreTokenizer(tuple(DEEPSEEK_LLM)),
    "deepseek-coder": PreTokenizer(tuple(DEEPSEEK_CODER)),
    "falcon": PreTokenizer(tuple(FALCON)),
    "deepseek-v3": PreTokenizer(tuple(DEEPSEEK_V3)),
    **dict.fromkeys(("glm4", "glm5"), PreTokenizer((LLAMA3,), ignore_merges=True, bos=False)),
}


def pre_tokenizer(pre: str | None) -> PreTokenizer:
    name = pre or "default"  # llama.cpp warns and uses 'default' when the key is missing
    spec = PRE_TOKENIZERS.get(name)
    if spec is None:
        supported = ", ".join(sorted(PRE_TOKENIZERS))
        raise TokenizerError(f"unsupported BPE pre-tokenizer tokenizer.ggml.pre = '{name}'; supported: {supported}")
    return spec


def split(text: str, patterns: list[regex.Pattern]) -> list[str]:
    fragments = [text]
    for pattern in patterns:
        fragments = [piece for frag in fragments for piece in _split_one(frag, pattern)]
    return fragments


def _split_one(text: str, pattern: regex.Pattern) -> list[str]:
    """Matches of `pattern` in `text`, plus the unmatched stretches between them, in order."""
    out = []
    end = 0
    for m in pattern.finditer(text):
        if m.start() > end:
            out.append(text[end : m.start()])
        out.append(m.group())
        end = m.end()
    if end < len(text):
        out.append(text[end:])
    return out
