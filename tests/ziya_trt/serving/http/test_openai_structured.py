"""Structured outputs through the OpenAI-compatible API on real tritonservers: openai-python's ``parse`` with a
pydantic model and LangChain's ``with_structured_output``, unchanged, against the reference engine (the tiny random
model: only the grammar makes its output fit); vLLM's guided_* fields; a bad schema is a 400 naming the field and the
server stays up; the synthetic engine refuses them by name."""

import json
import re
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from tests.ziya_trt.serving.http.test_openai_api import client, post

pytestmark = pytest.mark.server

# no free-text strings: a random model may put a raw control character in one, which xgrammar's JSON string rule
# admits (contracts/guided-decoding.json) and pydantic's strict JSON parser refuses
MESSAGES = [{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}]


class City(BaseModel):
    name: Literal["Paris", "Beijing", "Rome"]
    population_millions: int = Field(ge=0, le=40)
    capital: bool
    tags: list[Literal["old", "big", "river"]] = Field(max_length=3)


def test_openai_parse_with_a_pydantic_model(ref_server):
    c = client(ref_server)
    for seed in (1, 2, 3):
        done = c.chat.completions.parse(model="ziya", messages=MESSAGES, response_format=City, seed=seed,
                                        temperature=1.0, max_tokens=300)
        choice = done.choices[0]
        assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, City), choice.message.content
        assert City.model_validate_json(choice.message.content) == choice.message.parsed


def test_the_same_through_the_stream_helper(ref_server):
    with client(ref_server).chat.completions.stream(model="ziya", messages=MESSAGES, response_format=City, seed=4,
                                                   temperature=1.0, max_tokens=300) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, City)


def test_langchain_with_structured_output(ref_server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=ref_server.openai_url, api_key="unused", model="ziya", temperature=1.0, seed=5,
                     max_tokens=300, max_retries=0)
    # its default method is json_schema (response_format with the model's strict schema)
    got = llm.with_structured_output(City).invoke("Which city is the capital of France?")
    assert isinstance(got, City)
    got = llm.with_structured_output(City, method="json_schema", include_raw=True).invoke("And of China?")
    assert got["parsing_error"] is None and isinstance(got["parsed"], City)
    # json_mode is response_format json_object, the schema only in the prompt: any JSON object comes back (free
    # strings and keys: a random model's may run past max_tokens; seed 0 ends early)
    free = ChatOpenAI(base_url=ref_server.openai_url, api_key="unused", model="ziya", temperature=1.0, seed=0,
                      max_tokens=450, max_retries=0)
    assert isinstance(free.with_structured_output(None, method="json_mode").invoke("Say something in JSON."), dict)
    # function_calling needs tools, which this server refuses by name
    with pytest.raises(openai.BadRequestError, match="tools"):
        llm.with_structured_output(City, method="function_calling").invoke("Paris?")


def test_vllm_guided_fields_and_structured_outputs(ref_server):
    c = client(ref_server)

    def text(**extra):
        r = c.completions.create(model="ziya", prompt="The answer is", max_tokens=200, seed=7, temperature=1.0,
                                 extra_body=extra)
        assert r.choices[0].finish_reason == "stop", r
        return r.choices[0].text

    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", text(guided_regex=r"[0-9]{3}-[a-z]{2}"))
    assert text(guided_choice=["red", "green", "blue"]) in ("red", "green", "blue")
    assert text(guided_grammar='root ::= "a" ("b" | "c")') in ("ab", "ac")
    got = json.loads(text(guided_json={"type": "object", "properties": {"k": {"enum": [1, 2]}}, "required": ["k"]}),
                     strict=False)
    assert got["k"] in (1, 2)
    assert text(structured_outputs={"choice": ["yes", "no"]}) in ("yes", "no")
    assert isinstance(json.loads(text(structured_outputs={"json_object": True}), strict=False), dict)
    # any object: free keys and strings, which a random model may run past max_tokens (a prefix of an object then)
    for seed in (0, 8):
        r = c.chat.completions.create(model="ziya", messages=MESSAGES, response_format={"type": "json_object"},
                                      seed=seed, temperature=1.0, max_tokens=300)
        content = r.choices[0].message.content
        assert content.lstrip().startswith("{")
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content, strict=False), dict)


@pytest.mark.parametrize("extra,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"guided_regex": "([a-"}, "guided_regex"),
    ({"guided_grammar": "root ::= nowhere"}, "guided_grammar"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice"),
    ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag"),
    ({"structured_outputs": {"regex": "a", "unknown": 1}}, "structured_outputs.unknown"),
])
def test_bad_structured_outputs_are_400s_naming_the_field_and_the_server_stays_up(ref_server, extra, param):
    status, body = post(ref_server, "/v1/chat/completions", {"model": "ziya", "messages": MESSAGES, **extra})
    assert status == 400 and body["error"]["param"] == param, body
    assert body["error"]["type"] == "invalid_request_error"
    ok = client(ref_server).chat.completions.create(model="ziya", messages=MESSAGES, max_tokens=2)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_the_synthetic_engine_refuses_structured_outputs_by_name(syn_server):
    for extra, param in (({"response_format": {"type": "json_object"}}, "response_format"),
                         ({"guided_regex": "a+"}, "guided_regex")):
        status, body = post(syn_server, "/v1/chat/completions", {"model": "ziya", "messages": MESSAGES, **extra})
        assert status == 400 and body["error"]["param"] == param, body
        assert "synthetic engine has no guided decoding" in body["error"]["message"]
    status, _ = post(syn_server, "/v1/chat/completions", {"model": "ziya", "messages": MESSAGES,
                                                         "response_format": {"type": "text"}, "max_tokens": 2})
    assert status == 200


def test_the_triton_front_door_takes_the_guide_tensors(ref_server, syn_server):
    """tensorrt_llm_bls's guided_decoding_guide_type / guided_decoding_guide on the text front door: followed by the
    reference engine, refused by the synthetic one with its typed error."""
    def generate(srv, **extra):
        return post(srv, "/v2/models/ziya/generate", {"text_input": "<human>:colour?\n<bot>:", "max_tokens": 50,
                                                      "temperature": 1.0, "seed": 3, **extra})

    status, body = generate(ref_server, guided_decoding_guide_type="regex", guided_decoding_guide="(red|blue)!")
    assert status == 200 and body["text_output"] in ("red!", "blue!"), body
    status, body = generate(ref_server, guided_decoding_guide_type="regex", guided_decoding_guide="([")
    assert status == 400 and "guided_decoding_guide" in json.dumps(body), body
    status, body = generate(syn_server, guided_decoding_guide_type="json")
    assert status == 400 and "synthetic engine" in json.dumps(body), body
