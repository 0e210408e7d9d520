"""schemathesis against the OpenAI-compatible API's own OpenAPI document, on a real server: whatever a
client sends that the schema allows (and a good deal it does not), the server answers with a documented
status and content type, and never with a server error. Requests run against a fast synthetic engine."""

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from ziya_trt.serving.http.openai.schema import openapi

pytestmark = pytest.mark.server
schema = schemathesis.openapi.from_dict(openapi(("ensemble", "tensorrt_llm_bls"), 1024, 16))  # stock_server's
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_everything_it_documents(case, stock_server):
    case.call_and_validate(base_url=f"http://{stock_server.http_url}", checks=CHECKS, timeout=60)


def test_the_served_document_is_the_one_fuzzed(stock_server):
    with urllib.request.urlopen(f"http://{stock_server.http_url}/openapi.json", timeout=5) as r:
        assert json.loads(r.read()) == openapi(("ensemble", "tensorrt_llm_bls"), 1024, 16)
