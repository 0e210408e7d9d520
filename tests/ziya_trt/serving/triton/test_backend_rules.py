"""The engine stand-ins fail where the tensorrt_llm C++ backend would, on the same rendered config: a missing
parameter key, undeclared perf outputs, a full queue, a batch of two, outputs not asked for, a stop request."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.grpc as tg
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tests.triton_helpers import ENGINE, grpc_stream, hold_engine, release
from ziya_trt.errors import BackendError, QueueFullError, ServerOverloadedError, from_wire, is_queue_full
from ziya_trt.serving.triton.backend_rules import LoadedModel
from ziya_trt.serving.config import ConfigError, ServeConfig
from ziya_trt.serving.repo import model_configs, tensorrt_llm_config, to_pbtxt
from ziya_trt.wire.trtllm_template import template

PERF = template().backend.perf_outputs


def loaded(m) -> LoadedModel:
    """The rendered config as Triton hands it to a model: parsed, then in its JSON form."""
    proto = text_format.Parse(to_pbtxt(m), model_config_pb2.ModelConfig())
    return LoadedModel.from_model_config(json_format.MessageToDict(proto, preserving_proto_field_name=True))


def syn_cfg(**kw):
    return ServeConfig(engine="synthetic", tokenizer_dir="t", **kw)


# --- the rules, without a server ------------------------------------------------------------------

def test_the_rendered_engine_loads_and_a_missing_key_refuses_to_load_as_the_backend_would():
    m = tensorrt_llm_config(syn_cfg())
    loaded(m).check_load()
    for key in template().backend.unguarded_reads + ("gpt_model_path",):
        params = {k: v for k, v in m.parameters.items() if k != key}
        with pytest.raises(ConfigError, match=f"Cannot find parameter with name: {key}"):
            loaded(type(m)(**{**m.__dict__, "parameters": params})).check_load()


def test_perf_metrics_need_every_perf_output_declared_and_requests_need_ids_and_lengths():
    m = loaded(tensorrt_llm_config(syn_cfg()))
    assert set(PERF) <= m.outputs
    m.check_request({"output_ids", "sequence_length"}, perf_metrics=True)
    m.check_request(None, perf_metrics=True)  # asking for nothing asks for everything
    short = LoadedModel(m.name, m.keys, m.outputs - {"arrival_time_ns"})
    with pytest.raises(BackendError, match="unexpected inference output 'arrival_time_ns'"):
        short.check_request(None, perf_metrics=True)
    short.check_request(None, perf_metrics=False)
    with pytest.raises(BackendError, match="sequence_length tensor must be present"):
        m.check_request({"output_ids"}, perf_metrics=False)


def test_past_its_queue_the_stand_in_refuses_in_the_executors_words():
    from ziya_trt.engine.request import EngineLimits, EngineRequest
    from ziya_trt.engine.synthetic import SyntheticEngine

    eng = SyntheticEngine(EngineLimits(max_slots=1, max_queue=1), tokens_per_s=5.0)
    try:
        for i in range(2):  # one slot, one waiting
            eng.submit(EngineRequest([5, 6], 50, id=f"r{i}", streaming=True), lambda out: None)
        with pytest.raises(QueueFullError) as ei:
            eng.submit(EngineRequest([5, 6], 50, id="r2", streaming=True), lambda out: None)
        assert ei.value.to_wire() == "Maximum queue size of 1 has been reached, please try again later"
    finally:
        eng.shutdown(0)


def test_the_executors_queue_full_message_reads_back_as_overloaded():
    msg = template().backend.queue_full_message(7)
    assert msg == "Maximum queue size of 7 has been reached, please try again later"
    assert QueueFullError(msg).to_wire() == msg  # sent as the backend sends it: no code
    assert isinstance(from_wire(f"Executor failed: {msg}"), ServerOverloadedError)
    assert from_wire("Maximum queue size of N has been reached") is None
    # Triton's own refusal past the config's queue (a burst faster than execute), as the front door receives it
    assert isinstance(from_wire("synthetic: [request id: 7] Exceeds maximum queue size"), ServerOverloadedError)


def test_the_stand_in_loads_the_tensorrt_llm_config_with_only_the_backend_swapped():
    cfg = syn_cfg(max_batch_size=16, max_queue_size=9)
    stand_in = model_configs(cfg)[0]
    # the synthetic engine has no guided decoding: its config leaves it off, as --no-guided-decoding does
    real = tensorrt_llm_config(ServeConfig(engine="tensorrt_llm", tokenizer_dir="t", engine_dir="/e",
                                           engine_model_name="synthetic", max_batch_size=16, max_queue_size=9,
                                           guided_decoding=False))
    a, b = (text_format.Parse(to_pbtxt(m), model_config_pb2.ModelConfig()) for m in (stand_in, real))
    assert a.backend == "python" and b.backend == "tensorrtllm"
    a.backend = b.backend
    del a.parameters["gpt_model_path"], b.parameters["gpt_model_path"]  # the stand-in has no engine directory
    assert a == b


# --- on a real tritonserver -------------------------------------------------------------------------

def engine_request(ids, max_tokens=4, **extra):
    return {"input_ids": ids, "input_lengths": len(ids), "request_output_len": max_tokens, "streaming": True, **extra}


def test_perf_metrics_come_back_whole_from_the_stand_in(syn_server):
    values = engine_request([1, 5, 6, 7], return_perf_metrics=True)
    results, err = grpc_stream(syn_server.grpc_url, "synthetic", values, ENGINE)
    assert err is None, err
    last = [r for r in results if r.as_numpy("output_ids") is not None][-1]
    for name in PERF:
        assert last.as_numpy(name) is not None, name
    t = {n: int(last.as_numpy(n).reshape(-1)[0]) for n in ("arrival_time_ns", "first_scheduled_time_ns",
                                                         "first_token_time_ns", "last_token_time_ns")}
    assert 0 < t["arrival_time_ns"] <= t["first_scheduled_time_ns"] <= t["first_token_time_ns"] <= t["last_token_time_ns"]


def test_a_batch_of_two_is_two_requests_answered_on_one_stream(syn_server):
    ids = np.array([[1, 5, 6, 7], [1, 8, 9, 77]], dtype=np.int32)  # the second row is 3 long: 77 is padding
    c = tg.InferenceServerClient(syn_server.grpc_url)
    got: list = []
    done = threading.Event()

    def on(result, error):
        got.append((result, error))
        if error is not None or result.get_response().parameters["triton_final_response"].bool_param:
            done.set()

    inputs = {"input_ids": ids, "input_lengths": np.array([[4], [3]], dtype=np.int32),
              "request_output_len": np.array([[3], [3]], dtype=np.int32),
              "streaming": np.array([[True], [True]])}
    c.start_stream(callback=on)
    try:
        infer = [tg.InferInput(k, list(v.shape), ENGINE[k].client_dtype) for k, v in inputs.items()]
        for i, v in zip(infer, inputs.values()):
            i.set_data_from_numpy(v)
        c.async_stream_infer("synthetic", infer, request_id="b2", enable_empty_final_response=True)
        assert done.wait(30)
    finally:
        c.stop_stream()
        c.close()
    assert all(e is None for _, e in got), [str(e) for _, e in got if e is not None]
    rows: dict[int, list[int]] = {0: [], 1: []}
    for r, _ in got:
        out = r.as_numpy("output_ids")
        if out is not None:
            rows[int(r.as_numpy("batch_index").reshape(-1)[0])] += out.reshape(-1).tolist()
    finals = [r.get_response().parameters["triton_final_response"].bool_param for r, _ in got]
    assert finals.count(True) == 1 and finals[-1]  # one final flag, on the last response
    assert rows == {0: [5, 6, 7], 1: [8, 9, 8]}, rows  # each row replays its own prompt, cut to its length


def test_past_the_queue_the_engine_refuses_with_the_executors_message_and_the_fronts_say_overloaded(slow_server):
    """2 slots and a queue of 1, filled by clients of the engine itself: the engine refuses the next request with
    the executor's own message, which the front door reads back as [ziya:overloaded] and the OpenAI API as a 429
    with Retry-After."""
    import json
    import urllib.error
    import urllib.request

    holders = hold_engine(slow_server, 3)
    try:
        _, err = _wait_for_refusal(slow_server)
        # the engine's refusal (the executor's words), or Triton's own ahead of it (its queue has the same bound)
        assert err is not None and is_queue_full(err.message()), err.message()
        _, err = grpc_stream(slow_server.grpc_url, "ziya", {"text_input": "<human>:hi\n<bot>:", "max_tokens": 4})
        assert err is not None and err.message().startswith("[ziya:overloaded] "), err  # read back as overloaded
        body = {"model": "ziya", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        req = urllib.request.Request(f"http://{slow_server.http_url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("not refused")
        except urllib.error.HTTPError as e:
            assert e.code == 429 and e.headers["Retry-After"] == "1", (e.code, dict(e.headers))
            assert json.loads(e.read())["error"]["code"] == "overloaded"
    finally:
        release(holders)


def _wait_for_refusal(srv, tries: int = 50):
    import time

    for _ in range(tries):
        results, err = grpc_stream(srv.grpc_url, "synthetic", engine_request([1, 5], max_tokens=2), ENGINE)
        if err is not None:
            return results, err
        time.sleep(0.05)
    return None, None


def test_a_stop_request_gets_one_empty_final_response(syn_server):
    values = {"input_ids": [0], "input_lengths": 1, "request_output_len": 1, "stop": True}
    results, err = grpc_stream(syn_server.grpc_url, "synthetic", values, ENGINE, request_id="nobody")
    assert err is None and len(results) == 1 and results[0].as_numpy("output_ids") is None
