"""Arrays to and from the package's dataclasses, every one built by its TensorSpec (no server)."""

import numpy as np
import pytest

from ziya_trt.engine.request import EngineOutput, EngineRequest
from ziya_trt.errors import InvalidRequestError
from ziya_trt.text.sampling import SamplingParams
from ziya_trt.wire.arrays import (
    decode_word_list,
    encode_word_list,
    engine_inputs,
    engine_output_arrays,
    engine_request_from_inputs,
    read_inputs,
    stop_request_inputs,
    text_outputs,
)
from ziya_trt.wire.tensors import ENGINE_INPUTS, FRONT_DOOR_OUTPUTS
from ziya_trt.wire.trtllm_template import template


def test_read_inputs_keeps_only_the_tensors_a_request_has():
    class T:
        def __init__(self, a):
            self.a = a

        def as_numpy(self):
            return self.a

    sent = {"text_input": T(np.array([b"hi"], dtype=np.object_)), "max_tokens": T(np.array([4], dtype=np.int32))}
    got = read_inputs(lambda r, name: r.get(name), sent, ["text_input", "max_tokens", "top_p"])
    assert list(got) == ["text_input", "max_tokens"] and got["max_tokens"].tolist() == [4]


def test_engine_inputs_round_trip_through_the_engine_side():
    params = SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.8, top_k=5, seed=11, min_tokens=2)
    req = EngineRequest.from_params([1, 20, 21], params, end_id=2, pad_id=0, request_id="r1",
                                    stop_words=[[7, 8]], bad_words=[[9]])
    arrays = engine_inputs(req)
    for name, a in arrays.items():  # batch dimension first, the declared dtype
        assert a.dtype == ENGINE_INPUTS[name].np_dtype and a.shape[0] == 1, name
    back, stop = engine_request_from_inputs(arrays, "r1")
    floats = ("top_p", "temperature", "repetition_penalty")  # FP32 on the wire
    assert not stop and all(getattr(back, k) == pytest.approx(getattr(req, k)) for k in floats)
    assert {k: v for k, v in vars(back).items() if k not in floats} == {k: v for k, v in vars(req).items() if k not in floats}


def test_greedy_is_top_k_1_on_the_wire():
    req = EngineRequest.from_params([1, 5], SamplingParams(do_sample=False, top_k=40), end_id=2, pad_id=0)
    assert req.top_k == 1 and req.greedy
    assert EngineRequest.from_params([1, 5], SamplingParams(top_k=40), end_id=2, pad_id=0).top_k == 40


def test_a_stop_request_names_the_request_it_stops():
    _, stop = engine_request_from_inputs(stop_request_inputs(), "victim")
    assert stop is True
    with pytest.raises(InvalidRequestError, match="request id"):
        engine_request_from_inputs(stop_request_inputs(), "")


def test_engine_outputs_have_tensorrt_llm_shapes_and_only_what_was_asked_for():
    out = engine_output_arrays(EngineOutput([5, 6, 7], num_input_tokens=3, num_output_tokens=3))
    assert out["output_ids"].shape == (1, 1, 3) and out["sequence_length"].tolist() == [[3]]
    specs = {s.name: s for s in template().outputs}
    assert all(a.dtype == specs[k].np_dtype for k, a in out.items())
    assert set(engine_output_arrays(EngineOutput([]), {"output_ids"})) == {"output_ids"}


def test_log_probs_go_out_as_the_backend_writes_them_only_for_a_request_that_asked():
    """output_log_probs [1, beam, tokens] and cum_log_probs [1, beam], FP32, every generated token's so far
    (contracts/log-probs.json), and only among the outputs asked for."""
    so_far = [-0.5, -1.25, -0.25]
    out = engine_output_arrays(EngineOutput([7], log_probs=[-0.25]), log_probs=so_far)
    assert out["output_ids"].shape == (1, 1, 1)
    assert out["output_log_probs"].shape == (1, 1, 3) and out["output_log_probs"].dtype == np.float32
    assert out["output_log_probs"].reshape(-1).tolist() == so_far and out["cum_log_probs"].tolist() == [[-2.0]]
    assert {"output_log_probs", "cum_log_probs"}.isdisjoint(engine_output_arrays(EngineOutput([7])))
    asked = {"output_ids", "sequence_length", "output_log_probs"}
    assert set(engine_output_arrays(EngineOutput([7]), asked, log_probs=so_far)) == asked


def test_return_log_probs_is_sent_only_when_asked_and_read_back():
    req = EngineRequest.from_params([1, 5], SamplingParams(), end_id=2, pad_id=0, return_log_probs=True)
    arrays = engine_inputs(req)
    assert arrays["return_log_probs"].tolist() == [[True]]
    assert engine_request_from_inputs(arrays, "r")[0].return_log_probs
    plain = engine_inputs(EngineRequest.from_params([1, 5], SamplingParams(), end_id=2, pad_id=0))
    assert "return_log_probs" not in plain and not engine_request_from_inputs(plain, "r")[0].return_log_probs


def test_text_outputs_carry_counts_only_when_given():
    assert set(text_outputs("你好")) == {"text_output"}
    final = text_outputs("你好", 4, 2, "length")
    assert final["text_output"].tolist() == ["你好".encode()] and final["finish_reason"].tolist() == [b"length"]
    assert all(a.dtype == FRONT_DOOR_OUTPUTS[k].np_dtype and a.shape == (1,) for k, a in final.items())


def test_word_lists_round_trip():
    words = [[3, 4], [5], [6, 7, 8]]
    assert decode_word_list(encode_word_list(words)) == words
    with pytest.raises(InvalidRequestError, match="shape"):
        decode_word_list(np.zeros((3, 2), dtype=np.int32))
