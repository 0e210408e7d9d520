"""The HTTP guard's checks, as pure functions (the guard itself is tested against a real server in
tests/reliability/test_attacks.py)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ziya_trt.errors import InvalidRequestError
from ziya_trt.serving.http import checks
from ziya_trt.wire.tensors import ENGINE_INPUTS, FRONT_DOOR_INPUTS


def depth(obj) -> int:
    return 1 + max((depth(v) for v in (obj.values() if isinstance(obj, dict) else obj)), default=0) \
        if isinstance(obj, (dict, list)) else 0


json_st = st.recursive(st.one_of(st.integers(), st.text(alphabet='ab[]{}"\\', max_size=5), st.none()),
                       lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c, max_size=3)),
                       max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(obj=json_st, limit=st.integers(1, 8))
def test_the_depth_check_agrees_with_the_parsed_depth(obj, limit):
    assert checks.json_depth_over(json.dumps(obj).encode(), limit) == (depth(obj) > limit)


def test_the_crash_sizes_are_refused_and_real_requests_pass():
    assert checks.json_depth_over(b"[" * 110_000 + b"]" * 110_000)
    assert checks.json_depth_over(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    assert checks.json_depth_over(b"[" * 400_000)  # unterminated: still refused
    assert not checks.json_depth_over(json.dumps({"inputs": [{"data": [[[1, 2], [3, 4]]]}]}).encode())
    assert not checks.json_depth_over(json.dumps({"text_input": "[[[[" * 1000}).encode())  # brackets in a string


@pytest.mark.parametrize("path", ["/v2/models/%2e%2e/%2e%2e/v2/repository/index", "/v2/models/ziya/%2E%2e",
                                  "/v2/models/a%2fb/generate", "/v2/models/../repository/index", "//v2/health",
                                  "/v2/models/ziya/./generate", "/v2/x%00"])
def test_encoded_and_dotted_paths_are_refused(path):
    with pytest.raises(InvalidRequestError, match="not a plain path"):
        checks.check_path(path)


def test_plain_paths_pass():
    for p in ("/v2/models/ziya/generate_stream", "/v1/chat/completions?x=1", "/v2/health/ready", "/"):
        checks.check_path(p)


@pytest.mark.parametrize("path, restricted", [
    ("/v2/systemsharedmemory/region/x/register", True), ("/v2/cudasharedmemory/status", True),
    ("/v2/repository/index", True), ("/v2/repository/models/ziya/load", True), ("/v2/logging", True),
    ("/v2/trace/setting", True), ("/v2/models/ziya/config", True), ("/v2/models/ziya/versions/1/config", True),
    ("/v2/models/ziya/stats", True), ("/v2/models/stats", True), ("/v2/models/ziya/trace/setting", True),
    ("/v2/models/ziya/generate", False), ("/v2/models/ziya", False), ("/v2/health/ready", False),
    ("/v2", False), ("/v1/models", False), ("/metrics", False),
])
def test_control_apis_are_restricted(path, restricted):
    assert checks.is_restricted(path) is restricted


@pytest.mark.parametrize("body, field", [
    ({"max_tokens": 2**32 + 4}, "max_tokens"), ({"top_k": 2**31}, "top_k"), ({"max_tokens": -(2**31) - 1}, "max_tokens"),
    ({"seed": 2**64}, "seed"), ({"seed": -1}, "seed"), ({"temperature": 1e39}, "temperature"),
    ({"stop_words": ["a"], "end_id": [2**40]}, "end_id"), ({"stream": True}, "stream"),
])
def test_generate_numbers_that_would_wrap_are_refused(body, field):
    with pytest.raises(InvalidRequestError) as ei:
        checks.check_generate_body({"text_input": "hi", "max_tokens": 4} | body, FRONT_DOOR_INPUTS, streaming=False)
    assert ei.value.field == field


def test_in_range_generate_bodies_pass():
    checks.check_generate_body({"text_input": "hi", "max_tokens": 2**31 - 1, "seed": 2**64 - 1, "top_p": 0.5,
                                "temperature": 0, "stream": True}, FRONT_DOOR_INPUTS, streaming=True)
    checks.check_generate_body({"input_ids": [1, 2, 3], "input_lengths": 3, "request_output_len": 4,
                                "streaming": False}, ENGINE_INPUTS, streaming=False)
    assert checks.generate_model("/v2/models/ziya/versions/1/generate_stream") == ("ziya", True)
    assert checks.generate_model("/v2/models/ziya/infer") is None
