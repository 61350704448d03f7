"""Constrained decoding in the engine: the batched masks equal each matcher's own, the mask covers ids past the
tokenizer, a constrained and a free request batched together each get what they get alone, SentencePiece's
leading space is allowed, strict schemas close their objects, and a token the grammar refuses ends only its
request."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from moestream.assets import default_model_path
from moestream.engine import Engine, EngineConfig, EngineRequest, GrammarError, SamplingParams, json_schema_grammar
from moestream.engine.grammar import GrammarCompiler, closed_schema, apply_mask
from moestream.tokenizer import Tokenizer

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "w": {"enum": ["yes", "no"]}}, "required": ["n", "w"]}
SAMPLED = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=5)


@pytest.fixture(scope="module")
def engine():
    with Engine.open(default_model_path(), EngineConfig(progress=False)) as e:
        yield e


def run(engine, requests) -> list[tuple[list[int], str]]:
    """Submit (prompt, params, constraint) triples together; step until all end; (tokens, finish_reason) each."""
    out = [([], [None]) for _ in requests]
    for (prompt, params, constraint), (tokens, reason) in zip(requests, out):
        def on_event(ev, tokens=tokens, reason=reason):
            if ev.token is not None:
                tokens.append(ev.token)
            reason[0] = ev.finish_reason or reason[0]
        engine.scheduler.submit(EngineRequest(prompt, params, 120, on_event, frozenset(engine.tokenizer.eog_ids),
                                              constraint=constraint))
    while any(r[0] is None for _, r in out):
        engine.scheduler.step()
    return [(t, r[0]) for t, r in out]


def test_batched_masks_equal_each_matcher_alone(engine):
    g = engine.grammar
    constraints = [g.compile(json_schema_grammar(SCHEMA)) for _ in range(3)]
    for c, text in zip(constraints[1:], ['{"n": 1', '{"n": 12, "w": "y']):
        for t in engine.tokenizer.encode(text, add_bos=False):
            c.accept(t)
    batched = g.fill(constraints)
    for c, row in zip(constraints, batched):
        alone = torch.frombuffer(bytearray(c.matcher.compute_bitmask()), dtype=torch.int32)
        assert torch.equal(row, alone[: row.numel()]) and not alone[row.numel():].any()  # it pads a word


def test_apply_mask_allows_exactly_the_set_bits():
    mask = torch.zeros(3, dtype=torch.int32)
    allowed = [0, 5, 31, 32, 63, 70]
    for t in allowed:
        mask[t // 32] |= torch.tensor(1 << (t % 32)).to(torch.int32) if t % 32 != 31 else torch.tensor(-(1 << 31),
                                                                                                    dtype=torch.int32)
    logits = torch.zeros(100)  # wider than the mask's 96 ids: the rest are never allowed
    apply_mask(logits, mask)
    assert torch.isfinite(logits).nonzero().flatten().tolist() == allowed


def test_constrained_and_free_requests_batched_give_what_they_give_alone(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "A number and a word, please."}])
    free = [5, 17, 300, 41]
    alone_c = run(engine, [(prompt, SAMPLED, engine.grammar.compile(json_schema_grammar(SCHEMA, strict=True)))])
    alone_f = run(engine, [(free, SAMPLED, None)])
    together = run(engine, [(prompt, SAMPLED, engine.grammar.compile(json_schema_grammar(SCHEMA, strict=True))),
                            (free, SAMPLED, None)])
    assert together == alone_c + alone_f
    tokens, reason = alone_c[0]
    assert reason == "stop"
    jsonschema.validate(json.loads(engine.tokenizer.decode(tokens)), SCHEMA)


def test_finished_grammar_ends_the_request_without_an_end_token(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "yes or no?"}])
    (tokens, reason), = run(engine, [(prompt, SAMPLED, engine.grammar.compile(json_schema_grammar({"enum": [7]})))])
    assert engine.tokenizer.decode(tokens) == "7" and reason == "stop"


def test_a_refused_token_fails_only_its_request(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "x"}])
    c = engine.grammar.compile(json_schema_grammar({"enum": [7]}))
    for t in engine.tokenizer.encode("7", add_bos=False):
        c.accept(t)
    c.matcher.consume_token(engine.tokenizer.encode("{", add_bos=False)[0])  # poisons it: the next accept fails
    out = run(engine, [(prompt, SAMPLED, c), ([5, 17, 300], SAMPLED, None)])
    assert out[0][1] == "error" and out[1][1] == "length"


def test_sentencepiece_output_may_start_with_its_word_space():
    tok = Tokenizer.from_gguf(str(default_model_path()))
    tok.add_space_prefix = True  # as a Llama/Mistral vocabulary has it
    c = GrammarCompiler(tok, tok.vocab_size).compile(json_schema_grammar(SCHEMA))
    for t in tok.encode(' {"n": 3, "w": "no"}', add_bos=False):
        c.accept(t)
    assert c.finished


def test_strict_closes_objects_at_every_depth():
    schema = {"$defs": {"p": {"type": "object", "properties": {"a": {"type": "string"}}}},
              "type": "object", "properties": {"x": {"$ref": "#/$defs/p"},
                                               "y": {"type": "array", "items": {"properties": {"b": {}}}},
                                               "z": {"anyOf": [{"properties": {}}, {"type": "null"}]}},
              "additionalProperties": True}
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is True  # said outright: kept
    assert closed["$defs"]["p"]["additionalProperties"] is False
    assert closed["properties"]["y"]["items"]["additionalProperties"] is False
    assert closed["properties"]["z"]["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in schema["$defs"]["p"]  # a copy: the caller's schema is untouched


@pytest.mark.parametrize("schema", [{"type": "frob"}, {"$ref": "#/nowhere"}, {"type": "string", "pattern": "(("}, 3])
def test_bad_schemas_are_grammar_errors(engine, schema):
    with pytest.raises(GrammarError) as err:
        engine.grammar.compile(json_schema_grammar(schema))
    assert "start:" not in str(err.value)  # the message, not llguidance's grammar listing
