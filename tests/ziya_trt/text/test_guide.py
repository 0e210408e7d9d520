"""Guides from the request schemas, without a server or a model: which guide each structured output becomes, and the
checks that refuse a bad one by its parameter's name."""

import json
import re

import pytest
import xgrammar as xgr

from ziya_trt.errors import InvalidRequestError
from ziya_trt.serving.http.openai import schema
from ziya_trt.text.guide import GUIDE_TYPES, MAX_GUIDE_BYTES, Guide, check, choice_grammar

MSG = [{"role": "user", "content": "hi"}]


def chat(**extra):
    return schema.parse(schema.ChatCompletionRequest, {"model": "ziya", "messages": MSG, **extra})


def completion(**extra):
    return schema.parse(schema.CompletionRequest, {"model": "ziya", "prompt": "hi", **extra})


def matches(grammar: str, text: str) -> bool:
    """Whether xgrammar's grammar accepts exactly ``text`` (no tokenizer: a matcher over bytes)."""
    info = xgr.TokenizerInfo([chr(c) for c in range(32, 127)] + ["\n", "é", "\\"])
    m = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_grammar(grammar), terminate_without_stop_token=True)
    return m.accept_string(text) and m.is_terminated()


def test_a_choice_is_an_ebnf_grammar_of_exactly_its_strings():
    choices = ['say "hi"', "back\\slash", "é\n", "plain"]
    g = choice_grammar(choices)
    for c in choices:
        assert matches(g, c), c
    for other in ("say hi", "plai", "plainx", ""):
        assert not matches(g, other), other


@pytest.mark.parametrize("extra,want", [
    ({"response_format": {"type": "text"}}, None),
    ({"response_format": {"type": "json_object"}}, Guide("json_schema", '{"type": "object"}')),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": {
        "type": "object", "properties": {"x": {"type": "integer"}}}}}},
     Guide("json_schema", '{"type": "object", "properties": {"x": {"type": "integer"}}}')),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}, Guide("json")),
    ({"guided_json": '{"type": "string"}'}, Guide("json_schema", '{"type": "string"}')),
    ({"guided_regex": "[0-9]+"}, Guide("regex", "[0-9]+")),
    ({"guided_choice": ["a", "b"]}, Guide("ebnf_grammar", 'root ::= "a" | "b"')),
    ({"guided_grammar": 'root ::= "x"'}, Guide("ebnf_grammar", 'root ::= "x"')),
    ({"structured_outputs": {"json": {"type": "integer"}}}, Guide("json_schema", '{"type": "integer"}')),
    ({"structured_outputs": {"json_object": True}}, Guide("json_schema", '{"type": "object"}')),
])
def test_each_structured_output_becomes_one_guide(extra, want):
    req = chat(**extra)
    assert (req.guide[0] if req.guide else None) == want
    assert req.text_options()["guide"] == want


def test_completions_take_vllms_fields_but_not_response_format():
    assert completion(guided_regex="a+").guide == (Guide("regex", "a+"), "guided_regex")
    with pytest.raises(InvalidRequestError, match="Unrecognized request argument supplied: response_format"):
        completion(response_format={"type": "json_object"})


def test_check_refuses_what_the_backend_would_not_take_or_xgrammar_cannot_parse():
    assert set(GUIDE_TYPES) == {"json", "json_schema", "regex", "ebnf_grammar"}
    assert check(Guide("json"), "f") == Guide("json")
    for guide, says in ((Guide("structural_tag", "{}"), "is not one of"),
                        (Guide("regex", None), "needs its text"),
                        (Guide("regex", "a" * (MAX_GUIDE_BYTES + 1)), "over the limit"),
                        (Guide("json_schema", json.dumps({"type": "object", "properties": {"a": {"$ref": "#/no"}}})),
                         "not a valid json schema"),
                        (Guide("ebnf_grammar", "root ::= ("), "not a valid ebnf grammar")):
        with pytest.raises(InvalidRequestError, match=says) as e:
            check(guide, "the_field")
        assert e.value.field == "the_field"
        assert not re.search(r"\[\d\d:\d\d:\d\d\]|\.cc:\d+", str(e.value))  # no xgrammar log prefix
