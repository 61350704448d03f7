"""Tool-call and reasoning parsers against the real chat templates in llama.cpp's models/templates: each family's
templates render an assistant turn with tool calls, and the parser must give back exactly those calls (and the
turn's text), however the text is cut into chunks. The grammars that force a call are compiled with llguidance
and run over the same rendered text on a byte-level tokenizer that holds the family's markers as special tokens
(and again with the markers spelt in bytes)."""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass

import llguidance
import pytest

from moestream.server.toolformats import (FAMILIES, CallAbandoned, CallArgs, CallEnd, CallStart, Reasoning, Text,
                                          parser_class)
from moestream.server.toolformats.events import merged
from moestream.tokenizer.chat import ChatTemplate
from tests.fixtures.llama_cpp import llama_cpp_dir


def _tool(name: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"{name} tool",
            "parameters": {"type": "object", "properties": properties, "required": required}}}


TOOLS = [
    _tool("get_weather", {"city": {"type": "string", "description": "city"},
                          "days": {"type": "integer", "description": "days ahead"},
                          "opts": {"type": "object", "description": "options"},
                          "metric": {"type": "boolean", "description": "metric units"}}, ["city"]),
    _tool("search", {"query": {"type": "string", "description": "query"},
                     "limit": {"type": "integer", "description": "results"}}, ["query"]),
]
# Arguments in schema order (the grammar fixes key order): nested objects, numbers, quotes, newlines, unicode.
CALLS = [
    ("get_weather", {"city": 'Pa"ris\nÎle-de-France 北京', "days": 3,
                     "opts": {"units": {"temp": "C"}, "hours": [1, 2.5]}, "metric": True}),
    ("search", {"query": 'weather "today" <b>', "limit": 10}),
]
CONTENT = "Let me check."


@dataclass(frozen=True)
class Case:
    template: str
    family: str
    content_as: str = "text"  # where the message's content shows up: "text", "reasoning" or "dropped"
    one_call_per_message: bool = False  # the template renders a single call per assistant message
    max_calls: int = 2
    bos: str = ""
    eos: str = ""

    def __str__(self) -> str:
        return self.template.removesuffix(".jinja")


CASES = [
    Case("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "hermes", "dropped", bos="<|begin_of_text|>"),
    Case("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes"),
    Case("Qwen-Qwen3-0.6B.jinja", "hermes"),
    Case("Qwen3-Coder.jinja", "qwen3_coder"),
    Case("Qwen3.5-4B.jinja", "qwen3_coder"),
    Case("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral", "dropped", bos="<s>", eos="</s>"),
    Case("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", "dropped", bos="<s>", eos="</s>"),
    Case("unsloth-mistral-Devstral-Small-2507.jinja", "mistral", bos="<s>", eos="</s>"),
    Case("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", "dropped", max_calls=1, bos="<|begin_of_text|>"),
    Case("meta-llama-Llama-3.3-70B-Instruct.jinja", "llama3", "dropped", max_calls=1, bos="<|begin_of_text|>"),
    Case("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek_v3", bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>"),
    # this template renders a turn's content after its calls, as a second assistant turn: no content here
    Case("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek_v3", "dropped", bos="<｜begin▁of▁sentence｜>",
         eos="<｜end▁of▁sentence｜>"),
    Case("openai-gpt-oss-120b.jinja", "harmony", "reasoning", one_call_per_message=True),
    Case("GLM-4.6.jinja", "glm45"),
]
# One template per family, for the checks that do not depend on the template.
FAMILY_CASES = {family: next(c for c in CASES if c.family == family)
                for family in ("hermes", "qwen3_coder", "mistral", "llama3", "deepseek_v3", "harmony", "glm45")}
TURN_ENDS = ("<|im_end|>", "<｜end▁of▁sentence｜>", "<|eot_id|>", "</s>")


# --- rendering ----------------------------------------------------------------------------------------------------

@functools.cache
def template(case: Case) -> ChatTemplate:
    return ChatTemplate(source(case.template), bos_token=case.bos, eos_token=case.eos)


@functools.cache
def source(name: str) -> str:
    return (llama_cpp_dir() / "models/templates" / name).read_text()


def tool_call(i: int, name: str, arguments: dict) -> dict:
    return {"id": f"call{i:05d}", "type": "function", "function": {"name": name, "arguments": arguments}}


def conversation(case: Case, calls: list[tuple[str, dict]], content: str | None) -> list[dict]:
    messages = [{"role": "user", "content": "What is the weather like?"}]
    tool_calls = [tool_call(i, name, args) for i, (name, args) in enumerate(calls)]
    if case.one_call_per_message:
        return messages + [{"role": "assistant", "content": content if i == 0 else "", "tool_calls": [call]}
                           for i, call in enumerate(tool_calls)]
    return messages + [{"role": "assistant", "content": content, "tool_calls": tool_calls}]


@functools.cache
def generated(case: Case, n_calls: int, with_content: bool = True, days: object = 3) -> tuple[str, bool]:
    """(the assistant's generated text for a turn with the first n_calls of CALLS, whether the prompt left a
    reasoning block open). The text is what follows the prompt rendered with the generation prompt."""
    calls = [(name, {**args, "days": days} if "days" in args else args) for name, args in CALLS[:n_calls]]
    content = None if case.content_as == "dropped" else CONTENT if with_content else ""
    messages = conversation(case, calls, content)
    first_assistant = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    full = template(case).render(messages, add_generation_prompt=False, tools=TOOLS)
    prompt = template(case).render(messages[:first_assistant], add_generation_prompt=True, tools=TOOLS)
    cut = _common_prefix(full, prompt)
    text = full[cut:]
    while text.rstrip("\n") != text or text.endswith(TURN_ENDS):
        text = text.rstrip("\n")
        for end in TURN_ENDS:
            text = text.removesuffix(end)
    head = prompt[:cut]
    return text, head.rfind("<think>") > head.rfind("</think>")


def _common_prefix(full: str, prompt: str) -> int:
    """Where the generated part starts: the shared prefix, backed off to a marker's end where the template's
    generation prompt differs from the rendered turn (R1's '<think>\\n' against its tool-call turns)."""
    n = 0
    while n < min(len(full), len(prompt)) and full[n] == prompt[n]:
        n += 1
    while n < len(prompt) and n and prompt[n - 1] not in ">]\n":
        n -= 1
    return n


# --- running parsers ------------------------------------------------------------------------------------------------

def parse(family: str, chunks: list[str], tools: list[dict] | None = TOOLS, thinking: bool = False) -> list:
    parser = FAMILIES[family](tools, thinking=thinking)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return merged(events + parser.finish())


def calls_of(events: list) -> list[tuple[str, dict]]:
    """The completed calls, with their arguments parsed."""
    names, args, done = {}, {}, []
    for e in events:
        if isinstance(e, CallStart):
            assert e.index not in names, "a call index is used twice"
            names[e.index], args[e.index] = e.name, ""
        elif isinstance(e, CallArgs):
            args[e.index] += e.fragment
        elif isinstance(e, CallEnd):
            done.append(e.index)
    return [(names[i], json.loads(args[i])) for i in done]


def text_of(events: list, kind: type = Text) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def given_back(events: list) -> str:
    """Text, with the raw text of abandoned calls where it came (what a reader of the whole output saw)."""
    return "".join(e.text if isinstance(e, Text) else e.raw for e in events if isinstance(e, (Text, CallAbandoned)))


def summary(events: list) -> tuple:
    return calls_of(events), text_of(events), text_of(events, Reasoning)


# --- detection -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
def test_family_is_detected_from_the_template(case):
    assert parser_class(source(case.template)).family == case.family


def test_templates_without_a_format_get_hermes():
    assert parser_class(None).family == "hermes"
    assert parser_class("{{ messages[0].content }}").family == "hermes"
    assert set(FAMILIES) == {"hermes", "qwen3_coder", "mistral", "llama3", "deepseek_v3", "harmony", "glm45"}


# --- round trip ----------------------------------------------------------------------------------------------------

def expected_content(case: Case, kind: type) -> str:
    where = {"text": Text, "reasoning": Reasoning}.get(case.content_as)
    return CONTENT if where is kind else ""


ROUND_TRIPS = [(case, n) for case in CASES for n in (1, 2) if n <= case.max_calls]


@pytest.mark.parametrize(("case", "n_calls"), ROUND_TRIPS, ids=[f"{c}-{n}" for c, n in ROUND_TRIPS])
def test_rendered_calls_come_back(case, n_calls):
    text, thinking = generated(case, n_calls)
    events = parse(case.family, [text], thinking=thinking)
    assert calls_of(events) == CALLS[:n_calls], text
    assert text_of(events).strip() == expected_content(case, Text)
    assert text_of(events, Reasoning).strip() == expected_content(case, Reasoning)
    assert [e.index for e in events if isinstance(e, CallStart)] == list(range(n_calls))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_any_chunking_gives_the_same_result(case):
    text, thinking = generated(case, case.max_calls)
    whole = summary(parse(case.family, [text], thinking=thinking))
    assert summary(parse(case.family, list(text), thinking=thinking)) == whole
    for cut in range(1, len(text)):
        assert summary(parse(case.family, [text[:cut], text[cut:]], thinking=thinking)) == whole, cut


@pytest.mark.parametrize("family", FAMILY_CASES)
def test_damaged_calls_give_the_same_result_however_chunked(family):
    """Rendered calls with pieces cut out or markers pasted in: whatever the parser makes of them, it makes the
    same of them whole, in random chunks and one character at a time (a bad character ends a call at the same
    place however the text arrived)."""
    case, rng = FAMILY_CASES[family], random.Random(family)
    text, thinking = generated(case, case.max_calls)
    pieces = [*FAMILIES[family].grammar_markers, "<think>", "</think>", "{", "}", '"', ",", "\n", " ", "x", "<"]
    for _ in range(60):
        damaged = list(text)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(damaged))
            damaged[at:at + rng.randint(0, 4)] = [rng.choice(pieces)] if rng.random() < 0.6 else []
        damaged = "".join(damaged)
        cuts = sorted(rng.sample(range(len(damaged) + 1), 4))
        chunks = [damaged[a:b] for a, b in zip([0, *cuts], [*cuts, len(damaged)])]
        whole = summary(parse(family, [damaged], thinking=thinking))
        assert summary(parse(family, chunks, thinking=thinking)) == whole, damaged
        assert summary(parse(family, list(damaged), thinking=thinking)) == whole, damaged


@pytest.mark.parametrize("family", FAMILY_CASES)
def test_calls_stream_before_they_are_complete(family):
    text, thinking = generated(FAMILY_CASES[family], 1)
    parser = FAMILIES[family](TOOLS, thinking=thinking)
    events = parser.feed(text[: text.index("days")])  # the name and the first argument, not the rest
    assert CallStart(0, "get_weather") in events and not any(isinstance(e, CallEnd) for e in events)
    assert "".join(e.fragment for e in events if isinstance(e, CallArgs)).startswith('{"city": ')


def test_llama3_calls_may_follow_each_other():
    text = ' <|python_tag|>{"name": "search", "parameters": {"query": "a"}}; {"name": "search", "parameters": {}}'
    assert calls_of(parse("llama3", list(text))) == [("search", {"query": "a"}), ("search", {})]
    events = parse("llama3", ['{"name": "search", "parameters": {}} and then some words'])
    assert calls_of(events) == [("search", {})] and text_of(events) == "and then some words"


@pytest.mark.parametrize("family", ["qwen3_coder", "glm45"])
def test_xml_parameters_are_typed_by_the_schema(family):
    case = FAMILY_CASES[family]
    text, thinking = generated(case, 1, days="7")  # a string where the schema says integer: typed as 7
    (_, args), = calls_of(parse(family, [text], thinking=thinking))
    assert args["days"] == 7 and args["metric"] is True and args["opts"] == CALLS[0][1]["opts"]
    text, _ = generated(case, 1, days="next week")  # not a number: kept as the string it is
    (_, args), = calls_of(parse(family, [text], thinking=thinking))
    assert args["days"] == "next week"


# --- reasoning -----------------------------------------------------------------------------------------------------

THINK_FAMILIES = [f for f in FAMILIES if f != "harmony"]


@pytest.mark.parametrize("family", THINK_FAMILIES)
def test_think_block_is_reasoning(family):
    text = "<think>\nweigh {a} and <b>\n</think>\n\nThe answer."
    for chunks in ([text], list(text)):
        events = parse(family, chunks)
        assert text_of(events, Reasoning) == "weigh {a} and <b>" and text_of(events) == "The answer."


@pytest.mark.parametrize("family", THINK_FAMILIES)
def test_thinking_prompt_starts_inside_reasoning(family):
    for chunks in (["x</think>answer"], list("x</think>answer")):
        events = parse(family, chunks, thinking=True)
        assert text_of(events, Reasoning) == "x" and text_of(events) == "answer"
    events = parse(family, ["still thinking <tool_call> [TOOL_CALLS]"], thinking=True)
    assert text_of(events, Reasoning) == "still thinking <tool_call> [TOOL_CALLS]" and not calls_of(events)


def test_mistral_think_tags():
    events = parse("mistral", list("[THINK]hmm[/THINK]Sure."))
    assert text_of(events, Reasoning) == "hmm" and text_of(events) == "Sure."


def test_harmony_channels():
    text = ("<|channel|>analysis<|message|>User wants <weather>.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>It is {sunny}.<|return|>")
    for chunks in ([text], list(text)):
        events = parse("harmony", chunks)
        assert text_of(events, Reasoning) == "User wants <weather>." and text_of(events) == "It is {sunny}."
    events = parse("harmony", ["<|channel|>final<|message|>cut short"])
    assert text_of(events) == "cut short"


def test_harmony_recipient_after_the_channel():
    text = ('<|channel|>commentary to=functions.search <|constrain|>json<|message|>{"query": "q"}<|call|>')
    assert calls_of(parse("harmony", list(text))) == [("search", {"query": "q"})]


# --- plain text and no tools ----------------------------------------------------------------------------------------

PLAIN = ['Use {"braces"} and <tags>, [brackets] or a < b > c.',
         "{not json at all} <tool_call without end [TOOL_CALLS are words <｜tool▁call",
         '{"name": "unknown_tool", "parameters": {}}', "ends with a partial marker <tool_ca"]


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "harmony"])
def test_plain_text_is_all_text(family):
    for text in PLAIN:
        for chunks in ([text], list(text)):
            events = parse(family, chunks)
            assert not calls_of(events), text
            assert text_of(events) == text and not text_of(events, Reasoning)


def test_harmony_plain_text_is_all_text():
    for text in PLAIN:
        events = parse("harmony", list(text))
        assert text_of(events) == text and not calls_of(events)


@pytest.mark.parametrize("family", FAMILY_CASES)
def test_without_tools_markers_are_text(family):
    case = FAMILY_CASES[family]
    text, thinking = generated(case, case.max_calls)
    events = parse(family, [text], tools=None, thinking=thinking)
    assert not any(isinstance(e, (CallStart, CallArgs, CallEnd)) for e in events)
    if family == "harmony":
        assert json.dumps(CALLS[0][1]["opts"]) in text_of(events)  # the call's body, as content
    else:
        assert text_of(events) == (text.split("</think>")[-1].lstrip() if "</think>" in text else text)


# --- malformed -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILY_CASES)
def test_cut_off_calls_never_raise(family):
    case = FAMILY_CASES[family]
    text, thinking = generated(case, case.max_calls)
    for cut in range(len(text)):
        events = parse(family, [text[:cut]], thinking=thinking)
        calls = calls_of(events)  # every ended call has whole JSON arguments
        if family in ("qwen3_coder", "glm45"):  # a call cut between parameters ends with the complete ones
            assert all(name == CALLS[i][0] and args.items() <= CALLS[i][1].items()
                       for i, (name, args) in enumerate(calls)), cut
        else:
            assert calls == CALLS[: len(calls)], cut


@pytest.mark.parametrize("family", ["hermes", "mistral", "llama3", "deepseek_v3", "harmony"])
def test_bad_json_gives_its_text_back(family):
    case = FAMILY_CASES[family]
    text, thinking = generated(case, 1)
    broken = text.replace('"days": 3', '"days": 3]')
    assert broken != text
    for chunks in ([broken], list(broken)):
        events = parse(family, chunks, thinking=thinking)
        assert not calls_of(events)
        assert '"days": 3]' in given_back(events)
        started = {e.index for e in events if isinstance(e, CallStart)}
        assert started == {e.index for e in events if isinstance(e, CallAbandoned)}  # each started one is ended
        assert '"days": 3]' not in text_of(events) or not started  # not repeated as content


def test_unterminated_call_with_complete_arguments_is_ended():
    events = parse("hermes", ['<tool_call>\n{"name": "search", "arguments": {"query": "x"}'])
    assert calls_of(events) == [("search", {"query": "x"})]
    events = parse("qwen3_coder", ["<tool_call>\n<function=search>\n<parameter=query>\nx\n</parameter>\n</fun"])
    assert calls_of(events) == [("search", {"query": "x"})]
    events = parse("glm45", ["<tool_call>search\n<arg_key>query</arg_key>\n<arg_value>x</arg_value>\n"])
    assert calls_of(events) == [("search", {"query": "x"})]


def test_unterminated_value_abandons_the_call_with_its_text():
    events = parse("qwen3_coder", ["<tool_call>\n<function=search>\n<parameter=query>\nx"])
    assert not calls_of(events) and not text_of(events)
    assert given_back(events) == "<tool_call>\n<function=search>\n<parameter=query>\nx"
    events = parse("hermes", ['<tool_call>\n{"name": "search", "arguments": {"query": "x'])
    assert not calls_of(events) and "<tool_call>" in given_back(events)
    assert [type(e) for e in events if not isinstance(e, CallArgs)] == [CallStart, CallAbandoned]


# --- grammars ------------------------------------------------------------------------------------------------------

class ByteTokenizer:
    """256 single-byte tokens, an end-of-sequence token, and the family's markers as special tokens (the shape
    llguidance's TokenizerWrapper reads)."""

    def __init__(self, specials: tuple[str, ...]):
        self.specials = {text: 257 + i for i, text in enumerate(specials)}
        self.tokens = [bytes([b]) for b in range(256)] + [b"\xff<eos>"] + [b"\xff" + s.encode() for s in specials]
        self.eos_token_id, self.bos_token_id = 256, None
        self.special_token_ids = list(range(256, len(self.tokens)))
        self.is_tokenizer_wrapper = True

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)

    def encode(self, text: str, use_specials: bool) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            hit = next((s for s in self.specials if use_specials and text.startswith(s, i)), None)
            ids += [self.specials[hit]] if hit else list(text[i].encode())
            i += len(hit) if hit else 1
        return ids


@functools.cache
def tokenizers(family: str) -> tuple[ByteTokenizer, llguidance.LLTokenizer]:
    wrapper = ByteTokenizer(FAMILIES[family].grammar_markers)
    return wrapper, llguidance.LLTokenizer(wrapper)


def accepts(family: str, lark: str, text: str, use_specials: bool) -> bool:
    wrapper, lltok = tokenizers(family)
    grammar = llguidance.grammar_from("lark", lark)
    assert llguidance.LLMatcher.validate_grammar(grammar, lltok) == "", lark
    matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    matcher.consume_tokens(wrapper.encode(text, use_specials))
    return not matcher.is_error() and matcher.is_accepting()


def call_text(case: Case, n_calls: int, **changes) -> str:
    """The rendered calls alone (no content, no reasoning block)."""
    text, _ = generated(case, n_calls, with_content=False, **changes)
    return text.split("</think>")[-1].lstrip() if "</think>" in text else text


@pytest.mark.parametrize("family", FAMILIES)
def test_grammars_compile_without_a_tokenizer(family):
    cls = FAMILIES[family]
    for name, parallel in ((None, False), (None, True), ("search", False)):
        grammar = llguidance.grammar_from("lark", cls.call_grammar(TOOLS, name, parallel))
        assert llguidance.LLMatcher.validate_grammar(grammar) == ""


@pytest.mark.parametrize("use_specials", [True, False], ids=["special-tokens", "text-markers"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_grammar_accepts_rendered_calls_and_rejects_others(case, use_specials):
    cls = FAMILIES[case.family]
    special = tokenizers(case.family)[0].specials if use_specials else None
    one, many = call_text(case, 1), call_text(case, case.max_calls)
    single = cls.call_grammar(TOOLS, None, False, special)
    parallel = cls.call_grammar(TOOLS, None, True, special)
    assert accepts(case.family, single, one, use_specials)
    assert accepts(case.family, parallel, many, use_specials)
    assert accepts(case.family, cls.call_grammar(TOOLS, "get_weather", False, special), one, use_specials)
    if case.max_calls > 1:
        assert not accepts(case.family, single, many, use_specials)
    assert not accepts(case.family, cls.call_grammar(TOOLS, "search", False, special), one, use_specials)
    assert not accepts(case.family, cls.call_grammar(TOOLS[1:], None, True, special), one, use_specials)
    assert not accepts(case.family, single, call_text(case, 1, days="three"), use_specials)


def test_grammar_for_an_unknown_tool_is_refused():
    from moestream.errors import ConfigError

    with pytest.raises(ConfigError, match="nowhere"):
        FAMILIES["hermes"].call_grammar(TOOLS, "nowhere", False)
    with pytest.raises(ConfigError):
        FAMILIES["hermes"].call_grammar([], None, False)
