import pytest

from ziya_trt import errors as E


@pytest.mark.parametrize(
    "err, cls",
    [
        (E.InvalidRequestError("temperature: -1 is out of range", "temperature"), E.InvalidRequestError),
        (E.PromptTooLongError(5000, 4096), E.InvalidRequestError),
        (E.ServerOverloadedError("queue is full (64 waiting)"), E.ServerOverloadedError),
        (E.ServerError("engine failed"), E.ServerError),
        (E.ServerShuttingDownError("draining"), E.ServerShuttingDownError),
    ],
)
def test_wire_round_trip_keeps_the_class_and_text(err, cls):
    back = E.from_wire("in-band stream error: " + err.to_wire())
    assert isinstance(back, cls)
    assert back.message == err.message


def test_every_field_survives_the_round_trip():
    back = E.from_wire(E.PromptTooLongError(300, 256, what="the last user turn", field="messages").to_wire())
    assert type(back) is E.PromptTooLongError
    assert (back.n_tokens, back.budget, back.excess, back.field, back.what) == (300, 256, 44, "messages",
                                                                              "the last user turn")
    back = E.from_wire(E.InvalidRequestError("temperature: -1.0 is out of range", "temperature").to_wire())
    assert type(back) is E.InvalidRequestError and back.field == "temperature"
    assert E.from_wire("[ziya:invalid_request] something odd").field is None


def test_prompt_too_long_says_by_how_much():
    e = E.PromptTooLongError(5000, 4096)
    assert (e.excess, e.n_tokens, e.budget) == (904, 5000, 4096)
    assert "904 over the limit of 4096" in str(e)


def test_messages_without_a_code_are_not_guessed_except_the_full_queues_own_words():
    assert E.from_wire("[ziya:made_up] x") is None
    assert E.from_wire("queue size exceeded, maybe") is None
    # Triton's refusal past a model's queue, and TensorRT-LLM's executor's past maxQueueSize: no code, stable words
    assert isinstance(E.from_wire("[request id: 9] Exceeds maximum queue size"), E.ServerOverloadedError)
    msg = "Maximum queue size of 64 has been reached, please try again later"
    assert isinstance(E.from_wire(msg), E.ServerOverloadedError) and E.from_wire(msg).message == msg


def test_connection_errors_do_not_shadow_the_builtins_and_the_old_names_warn():
    import ziya_trt

    assert not issubclass(E.APIConnectionError, ConnectionError) and issubclass(E.APITimeoutError, E.APIConnectionError)
    with pytest.warns(DeprecationWarning, match="APIConnectionError"):
        assert E.ConnectionError is E.APIConnectionError
    with pytest.warns(DeprecationWarning, match="APITimeoutError"):
        assert ziya_trt.TimeoutError is E.APITimeoutError


def test_unexpected_exceptions_become_generic_errors_naming_only_their_type():
    err = E.typed(FileNotFoundError("/secret/path/model.bin"), "engine: could not start")
    assert isinstance(err, E.ServerError) and err.message == "engine: could not start (FileNotFoundError)"
    same = E.ServerOverloadedError("full")
    assert E.typed(same, "x") is same


def test_one_error_table_gives_every_wire_its_answer():
    """Status, OpenAI type and code, metric kind and Retry-After come from one table, for every error class."""
    from ziya_trt.serving.http.openai.schema import openai_error
    from ziya_trt.serving.request_metrics import ERROR_KINDS, error_kind

    cases = [
        (E.BodyTooLargeError(9, 1), 413, "invalid_request_error", "request_too_large", "invalid", None),
        (E.PromptTooLongError(9, 5), 400, "invalid_request_error", "context_length_exceeded", "invalid", None),
        (E.InvalidRequestError("top_k: no", "top_k"), 400, "invalid_request_error", "invalid_value", "invalid", None),
        (E.ServerOverloadedError("full"), 429, "rate_limit_error", "overloaded", "overload", "1"),
        (E.QueueFullError("Maximum queue size of 1 has been reached"), 429, "rate_limit_error", "overloaded",
         "overload", "1"),
        (E.ServerShuttingDownError("bye"), 503, "server_error", "shutting_down", "shutting_down", "1"),
        (E.BackendError("boom"), 500, "server_error", "internal_error", "server", None),
        (E.TokenizerError("p", ["x"]), 500, "server_error", "internal_error", "server", None),
    ]
    for err, status, otype, ocode, metric, retry in cases:
        k = E.kind_of(err)
        assert (k.http_status, k.openai_type, k.openai_code, k.metric) == (status, otype, ocode, metric), err
        got_status, body = openai_error(err)
        assert got_status == status and body["error"]["type"] == otype and body["error"]["code"] == ocode
        assert error_kind(err) == metric and metric in ERROR_KINDS
        assert E.retry_headers(err).get("Retry-After") == retry
    assert openai_error(E.InvalidRequestError("top_k: no", "top_k"))[1]["error"]["param"] == "top_k"


def test_a_transports_status_is_read_by_the_table_never_a_message_with_a_code_overridden():
    assert isinstance(E.from_status(429, "x"), E.ServerOverloadedError)
    assert isinstance(E.from_status("StatusCode.INVALID_ARGUMENT", "x"), E.InvalidRequestError)
    assert isinstance(E.from_status(503, "x"), E.ServerShuttingDownError)
    assert E.from_status(500, "x") is None and E.from_status(None, "x") is None
    assert E.from_status("StatusCode.UNAVAILABLE", "x") is None  # a transport failure: the client's own mapping
    from ziya_trt.client._core import map_error

    assert isinstance(map_error("[ziya:overloaded] full", 400), E.ServerOverloadedError)  # the code wins
    assert isinstance(map_error("something", 413), E.InvalidRequestError)


# one message of each of Triton's own forms, as tritonserver 2.51 sent it (tests/ziya_trt/client/test_triton_messages.py
# meets each from a real server); the error it is; the field it names
TRITON_SAMPLES = [
    ("Request for unknown model: 'nope' is not found", E.InvalidRequestError, None),
    ("Request for unknown model: 'ziya' has no available versions", E.ServerShuttingDownError, None),
    ("[request id: r1] expected number of inputs between 2 and 62 but got 1 inputs for model 'synthetic'. Got input(s) "
     "['input_ids'], but missing required input(s) ['input_lengths','request_output_len']. Please provide all required "
     "input(s).", E.InvalidRequestError, None),
    ("unexpected inference input 'bogus' for model 'ziya'", E.InvalidRequestError, "bogus"),
    ("[request id: r1] inference input 'max_tokens' data-type is 'FP32', but model 'ziya' expects 'INT32'",
     E.InvalidRequestError, "max_tokens"),
    ("[request id: r1] unexpected shape for input 'max_tokens' for model 'ziya'. Expected [-1,1], got [1,2]. NOTE: "
     "Setting a non-zero max_batch_size in the model config requires a batch dimension", E.InvalidRequestError,
     "max_tokens"),
    ("[request id: <id_unknown>] input 'text_input' batch size does not match other inputs for 'ziya'",
     E.InvalidRequestError, "text_input"),
    ("[request id: r1] inference request batch-size must be <= 2 for 'synthetic'", E.InvalidRequestError, None),
    ("[request id: r1] Exceeds maximum queue size", E.ServerOverloadedError, None),
]


def _row(message):
    return next(i for i, (pattern, _) in enumerate(E.TRITON_MESSAGES) if pattern.search(message))


@pytest.mark.parametrize("message, cls, field", TRITON_SAMPLES, ids=[m[:40] for m, _, _ in TRITON_SAMPLES])
def test_each_of_tritons_own_forms_is_its_typed_error(message, cls, field):
    err = E.from_triton(message)
    assert type(err) is cls and err.message == message
    assert getattr(err, "field", None) == field


def test_every_row_of_tritons_forms_has_its_sample_and_nothing_else_matches():
    assert sorted(_row(m) for m, _, _ in TRITON_SAMPLES) == list(range(len(E.TRITON_MESSAGES)))
    assert E.from_triton("expected 3 inputs but got 2 inputs for model 'm'. Got input(s) ['a'], but missing required "
                         "input(s) ['b']. Please provide all required input(s).") is not None  # the other count form
    for other in ("", "expected an integer", "engine: expected 3 inputs but got 2", "the model expects 'INT32'",
                  "synthetic: Request for unknown model: 'x' is not found", "input 'x' is not ready",
                  "[ziya:invalid_request] max_tokens: required input is missing"):
        assert E.from_triton(other) is None, other
