"""The client's error mapping: by the server's code, the transport's status and the failed transport's class; never
by words in a message (no server: the exceptions are the ones tritonclient, http.client and aiohttp raise)."""

import http.client
import socket

import aiohttp
import grpc
import pytest
from tritonclient.utils import InferenceServerException

from ziya_trt import errors as E
from ziya_trt.client._core import map_error
from ziya_trt.client._transport import _retry_after, _sse_event

# words the client once read as a kind of error; none of them decides anything now
WORDS = ["expected an integer", "unknown model 'x'", "x is not found", "model not ready", "unexpected token",
         "missing required input", "connection refused", "failed to connect", "unavailable", "stream removed",
         "deadline exceeded", "timed out", "timeout", "queue is long"]


@pytest.mark.parametrize("words", WORDS)
def test_words_in_a_message_decide_nothing(words):
    """With a 500, or with no status and none of Triton's own message forms, a message is a ServerError whatever it
    says, and keeps its text."""
    for err in (map_error(words, 500), map_error(InferenceServerException(msg=words)),
                map_error(InferenceServerException(msg=words, status="StatusCode.INTERNAL"))):
        assert type(err) is E.ServerError and err.message == words


def test_an_in_band_message_that_only_resembles_tritons_forms_is_a_server_error():
    for msg in ("engine: expected 3 inputs but got 2", "the model expects 'INT32'", "input 'x' is unexpected",
                "synthetic: Request for unknown model: 'x' is not found"):  # not at the start: not Triton's own
        assert type(map_error(InferenceServerException(msg=msg))) is E.ServerError


def test_the_code_wins_then_the_status():
    assert isinstance(map_error("[ziya:overloaded] full", 400), E.ServerOverloadedError)
    assert isinstance(map_error("[ziya:invalid_request] temperature: no", 500), E.InvalidRequestError)
    assert isinstance(map_error("timed out", 400), E.InvalidRequestError)
    assert isinstance(map_error("connection refused", 429), E.ServerOverloadedError)
    assert isinstance(map_error("anything", 503), E.ServerShuttingDownError)
    not_found = InferenceServerException(msg="Request for unknown model: 'x' is not found", status="StatusCode.NOT_FOUND")
    assert isinstance(map_error(not_found), E.InvalidRequestError)


@pytest.mark.parametrize("status, cls", [("StatusCode.UNAVAILABLE", E.APIConnectionError),
                                         ("StatusCode.CANCELLED", E.APIConnectionError),
                                         ("StatusCode.DEADLINE_EXCEEDED", E.APITimeoutError)])
def test_grpc_transport_status_codes(status, cls):
    """tritonclient's sync stream reports a failed call as InferenceServerException(status=...); grpc.aio raises
    AioRpcError with its code(): both by the code, whatever the details say."""
    err = map_error(InferenceServerException(msg="details", status=status))
    assert type(err) is cls and "details" in err.message
    aio = grpc.aio.AioRpcError(getattr(grpc.StatusCode, status.split(".")[1]), grpc.aio.Metadata(),
                               grpc.aio.Metadata(), details="Stream removed (Socket closed)")
    assert type(map_error(aio)) is cls


@pytest.mark.parametrize("exc, cls", [
    (ConnectionRefusedError(111, "Connection refused"), E.APIConnectionError),
    (ConnectionResetError(), E.APIConnectionError),
    (http.client.RemoteDisconnected("Remote end closed connection without response"), E.APIConnectionError),
    (http.client.IncompleteRead(b"partial"), E.APIConnectionError),  # not an OSError: a body cut short
    (OSError(), E.APIConnectionError),
    (socket.timeout("timed out"), E.APITimeoutError),
    (TimeoutError(), E.APITimeoutError),  # asyncio's timeout too
    (aiohttp.ServerDisconnectedError(), E.APIConnectionError),
    (aiohttp.ClientPayloadError("Response payload is not completed"), E.APIConnectionError),
    (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), E.APITimeoutError),
])
def test_transport_failures_by_class(exc, cls):
    err = map_error(exc)
    assert type(err) is cls and err.message


def test_other_exceptions_are_server_errors_with_their_message():
    assert type(map_error(ValueError("refused: timed out"))) is E.ServerError
    assert map_error(ValueError()).message == "ValueError"


def test_an_sse_error_event_of_a_stream_that_began_200_is_in_band():
    msg = "Request for unknown model: 'x' is not found"
    event = ('data: {"error": "%s"}' % msg.replace("'", "\\u0027")).encode()
    with pytest.raises(E.InvalidRequestError):
        _sse_event(event, 200)  # no status of its own: Triton's form
    with pytest.raises(E.ServerError) as ei:
        _sse_event(b'data: {"error": "expected an integer"}', 200)
    assert type(ei.value) is E.ServerError
    with pytest.raises(E.InvalidRequestError):
        _sse_event(b'data: {"error": "anything"}', 400)  # the stream's own error status


def test_retry_after_is_read_in_seconds_or_as_a_date():
    assert _retry_after("2") == 2.0 and _retry_after("0.5") == 0.5 and _retry_after("-3") == 0.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert 0.0 <= _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1.0  # a date gone by: no wait
    assert map_error("x", 503, 1.5).retry_after_s == 1.5 and map_error("x", 503).retry_after_s is None
