"""llguidance against xgrammar for constrained decoding (issue 16): schema coverage, first-compile time and the
per-token cost of a mask, on this project's tokenizers (the embedded model's 4096 ids and Qwen2's 151k).

Each engine walks the same token sequences: valid JSON for each schema of tests/server/test_structured_output.py
(written by the embedded model under llguidance's constraint at temperature 1, then tokenized by each vocabulary),
computing the mask before every token and then accepting it, as the scheduler does. Coverage also counts a few
schemas with keywords beyond the test's. xgrammar is not a dependency: `pip install --no-deps xgrammar
apache-tvm-ffi` to run this.

    PYTHONPATH=. python bench/grammar_engines.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moestream.assets import default_model_path  # noqa: E402
from moestream.engine import Engine, EngineConfig, EngineRequest, SamplingParams, json_schema_grammar  # noqa: E402
from moestream.engine.grammar import GrammarCompiler, JSON_LAYOUT, closed_schema  # noqa: E402
from moestream.tokenizer import Tokenizer  # noqa: E402
from tests.fixtures.llama_cpp import vocab_file  # noqa: E402
from tests.server.test_structured_output import SCHEMAS  # noqa: E402

VIOLATIONS = [  # (schema, a text that breaks it): does an engine that compiles the schema keep to it?
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "[1, 1]"),
    ({"not": {"type": "string"}}, '"a"'),
    ({"type": "object", "minProperties": 1, "maxProperties": 2}, "{}"),
]
EXTRA = [  # keywords past the test's: coverage only
    {"type": "object", "properties": {"e": {"type": "string", "format": "email"}}, "required": ["e"]},
    {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
    {"type": "object", "minProperties": 1, "maxProperties": 2},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "if": {"required": ["a"]}, "then": {}},
    {"not": {"type": "string"}},
    {"type": "string", "format": "date-time"},
    {"type": "object", "properties": {"t": {"type": "array", "prefixItems": [{"type": "integer"},
                                                                            {"type": "string"}]}}},
]


def instances() -> list[str]:
    """One valid JSON text per test schema, from the embedded model under the constraint."""
    texts = []
    with Engine.open(default_model_path(), EngineConfig(progress=False)) as eng:
        for i, schema in enumerate(SCHEMAS):
            out = []
            req = EngineRequest(eng.encode_chat([{"role": "user", "content": f"thing {i}"}]),
                                SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=i), 200,
                                out.append, frozenset(eng.tokenizer.eog_ids),
                                constraint=eng.grammar.compile(json_schema_grammar(schema, strict=True)))
            eng.scheduler.submit(req)
            while not out or not out[-1].finish_reason:
                eng.scheduler.step()
            text = eng.tokenizer.decode([e.token for e in out if e.token is not None])
            texts.append(json.dumps(json.loads(text)))  # one layout both engines allow (their blanks differ)
    return texts


class Llg:
    name = "llguidance"

    def __init__(self, tok: Tokenizer):
        self.c = GrammarCompiler(tok, tok.vocab_size)
        self.c._lltok

    def compile(self, schema):
        return self.c.compile(json_schema_grammar(schema, strict=True))

    def walk(self, constraint, ids) -> float:
        t0 = time.perf_counter()
        for t in ids:
            self.c.fill([constraint])
            constraint.accept(t)
        return time.perf_counter() - t0


class Xgr:
    name = "xgrammar"

    def __init__(self, tok: Tokenizer):
        import xgrammar as xg
        self.xg = xg
        vocab = [tok.token_bytes(i) for i in range(tok.vocab_size)]
        info = xg.TokenizerInfo(vocab, xg.VocabType.RAW, vocab_size=tok.vocab_size,
                                stop_token_ids=sorted(tok.eog_ids))
        self.compiler = xg.GrammarCompiler(info, cache_enabled=False)
        self.mask = xg.allocate_token_bitmask(1, tok.vocab_size)

    def compile(self, schema):
        return self.xg.GrammarMatcher(self.compiler.compile_json_schema(json.dumps(closed_schema(schema)),
                                                                         max_whitespace_cnt=16))

    def walk(self, matcher, ids) -> float:
        t0 = time.perf_counter()
        for t in ids:
            matcher.fill_next_token_bitmask(self.mask)
            if not matcher.accept_token(t):
                raise ValueError(f"xgrammar refused token {t} of a text llguidance accepted")
        return time.perf_counter() - t0


def measure(engine, tok: Tokenizer, texts: list[str]) -> dict:
    compiled, compile_ms, per_token_us, covered = [], [], [], 0
    for schema in SCHEMAS + EXTRA:
        try:
            t0 = time.perf_counter()
            compiled.append(engine.compile(schema))
            compile_ms.append((time.perf_counter() - t0) * 1e3)
            covered += 1
        except Exception as exc:  # noqa: BLE001  (a coverage count: any refusal counts as not covered)
            compiled.append(None)
            print(f"  {engine.name} refuses {json.dumps(schema)[:70]}: {str(exc)[:90]}")
    for constraint, text in zip(compiled, texts):
        ids = tok.encode(text, add_bos=False, parse_special=False)
        if constraint is None:
            continue
        try:
            per_token_us.append(engine.walk(constraint, ids) / len(ids) * 1e6)
        except ValueError as exc:
            print(f"  {engine.name}: {exc}: {text[:60]!r}")
    kept = 0
    for schema, text in VIOLATIONS:
        try:
            constraint = engine.compile(schema)
        except Exception:  # noqa: BLE001  (refused outright: kept to, loudly)
            kept += 1
            continue
        try:
            engine.walk(constraint, tok.encode(text, add_bos=False, parse_special=False))
            print(f"  {engine.name} compiled {json.dumps(schema)} and accepts {text}")
        except Exception:  # noqa: BLE001
            kept += 1
    return {"kept": kept, "covered": covered, "of": len(SCHEMAS) + len(EXTRA), "compile_ms_median": statistics.median(compile_ms),
            "compile_ms_max": max(compile_ms), "mask_us_median": statistics.median(per_token_us),
            "mask_us_max": max(per_token_us)}


def main() -> None:
    torch.set_num_threads(2)
    texts = instances()
    vocabularies = {"embedded (4096)": Tokenizer.from_gguf(str(default_model_path())),
                    "qwen2 (151k)": Tokenizer.from_gguf(str(vocab_file("qwen2")))}
    print("| vocabulary | engine | token table s | schemas compiled | first compile ms (median / max) | "
          "mask + accept per token µs (median / max) | schemas kept to or refused |")
    print("|---|---|---|---|---|---|---|")
    for label, tok in vocabularies.items():
        for cls in (Llg, Xgr):
            t0 = time.perf_counter()
            engine = cls(tok)
            table = time.perf_counter() - t0
            r = measure(engine, tok, texts)
            print(f"| {label} | {cls.name} | {table:.2f} | {r['covered']} / {r['of']} | "
                  f"{r['compile_ms_median']:.1f} / {r['compile_ms_max']:.1f} | "
                  f"{r['mask_us_median']:.0f} / {r['mask_us_max']:.0f} | {r['kept']} / {len(VIOLATIONS)} |",
                  flush=True)


if __name__ == "__main__":
    main()
