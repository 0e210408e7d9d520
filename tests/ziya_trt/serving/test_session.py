"""A session's engine outputs with log probabilities (no server): the engine sends every generated token's so far
beside only the new tokens (contracts/log-probs.json); the session takes the new ones by position."""

import numpy as np
import pytest

from ziya_trt.serving.admission import LocalBudget
from ziya_trt.serving.frontdoor import FrontDoor, FrontDoorLimits, TextJob, TextRequest
from ziya_trt.serving.session import Sessions
from ziya_trt.text.sampling import SamplingParams
from ziya_trt.wire.tensors import FRONT_DOOR_ENGINE_OUTPUTS, LOG_PROB_OUTPUTS


class Link:
    def __init__(self):
        self.calls = []

    def submit(self, request_id, arrays, on_event, **kw):
        self.calls.append((request_id, arrays, on_event, kw))

    def stop(self, request_id, arrays):
        return True


@pytest.fixture
def sessions(tok):
    door = FrontDoor(tok, FrontDoorLimits(256, 512))
    return Sessions(door, Link(), LocalBudget(4), lambda outcome: None, "test", "reference")


def open_session(sessions, logprobs):
    req = TextRequest(text="<human>:你好\n<bot>:", messages=None, params=SamplingParams(max_new_tokens=16),
                      stream=True, logprobs=logprobs)
    return sessions.open(sessions.admit(), lambda door: TextJob(door, req))


def response(tokens, so_far):
    return {"output_ids": np.asarray([[tokens]], dtype=np.int32),
            "output_log_probs": np.asarray([[so_far]], dtype=np.float32)}


def test_only_a_request_that_asks_asks_the_engine_for_log_probabilities(sessions):
    open_session(sessions, False).submit(lambda out: None)
    open_session(sessions, True).submit(lambda out: None)
    (_, plain, _, kw_plain), (_, asked, _, kw_asked) = sessions.link.calls
    assert "return_log_probs" not in plain and kw_plain == {}
    assert asked["return_log_probs"].tolist() == [[True]] and kw_asked == {"extra_outputs": LOG_PROB_OUTPUTS}
    assert set(LOG_PROB_OUTPUTS).isdisjoint(FRONT_DOOR_ENGINE_OUTPUTS)


def test_the_new_tokens_log_probabilities_are_taken_by_position(sessions):
    s = open_session(sessions, True)
    a = s._output(response([20, 21], [-0.5, -0.25]), None, False)
    b = s._output(response([22], [-0.5, -0.25, -2.0]), None, False)
    # a trailing value beyond the tokens (an end token's, say) is not taken for the next token
    c = s._output(response([23], [-0.5, -0.25, -2.0, -1.0, -3.0]), None, True)
    assert (a.log_probs, b.log_probs, c.log_probs) == ([-0.5, -0.25], [-2.0], [-1.0])
    assert s._output({"output_ids": np.zeros((1, 1, 0), np.int32)}, None, True).log_probs == []


def test_tokens_without_their_log_probabilities_fail_the_request(sessions):
    s = open_session(sessions, True)
    out = s._output({"output_ids": np.asarray([[[20, 21]]], dtype=np.int32)}, None, False)
    assert out.final and out.error is not None and "log probabilities" in str(out.error)


def test_a_request_that_does_not_ask_reads_none(sessions):
    s = open_session(sessions, False)
    assert s._output(response([20], [-0.5]), None, False).log_probs is None


@pytest.mark.parametrize("message, kind", [
    ("Request for unknown model: 'reference' has no available versions", "ServerShuttingDownError"),
    ("[request id: 1] Exceeds maximum queue size", "ServerOverloadedError"),
    # Triton refusing what this front built is the server's fault, never the client's request
    ("[request id: r1] expected number of inputs between 2 and 62 but got 1 inputs for model 'reference'. Got "
     "input(s) ['x'], but missing required input(s) ['input_lengths']. Please provide all required input(s).",
     "ServerError"),
    ("[ziya:prompt_too_long] input_ids: prompt is 300 tokens, 44 over the limit of 256 tokens", "PromptTooLongError"),
])
def test_an_engine_calls_error_is_typed_for_the_client(sessions, message, kind):
    s = open_session(sessions, logprobs=False)
    s.submit(lambda out: outs.append(out))
    outs = []
    s.sessions.link.calls[-1][2]({}, message, True)
    assert outs[0].final and type(outs[0].error).__name__ == kind
