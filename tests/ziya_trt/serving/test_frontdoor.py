"""The front door's per-request logic (TextJob) on the tiny tokenizer: no server."""

import numpy as np
import pytest

from ziya_trt.finish import FinishReason
from ziya_trt.serving.frontdoor import FrontDoor, FrontDoorLimits

ANSWER = "北京是中国的首都。 The capital is Beijing, 谢谢!"


@pytest.fixture(scope="module")
def door(tok):
    return FrontDoor(tok, FrontDoorLimits(max_input_len=256, max_seq_len=512))


def job(door, max_tokens=64, stream=True, stop=None, echo=False):
    inputs = {
        "text_input": np.array(["<human>:你好\n<bot>:".encode()], dtype=np.object_),
        "max_tokens": np.array([max_tokens], dtype=np.int32),
        "stream": np.array([stream]),
        "exclude_input_in_output": np.array([not echo]),
    }
    if stop:
        inputs["stop_words"] = np.array([w.encode() for w in stop], dtype=np.object_)
    return door.open(inputs)


def ids(door, text):
    return door.tok.encode(text, add_bos=False)


def test_streamed_pieces_and_the_final_text_add_up_to_the_answer(door):
    j, tokens = job(door), ids(door, ANSWER)
    streamed = []
    for k in range(0, len(tokens), 3):  # engine responses of three tokens
        text, stop = j.push(tokens[k : k + 3])
        assert stop is False
        streamed.append(text)
    final = j.finish()
    assert "".join(streamed) + final == ANSWER
    assert "\ufffd" not in "".join(streamed)  # no half characters on the wire
    assert j.finish_reason is FinishReason.EOS and j.n_output == len(tokens)


def test_max_tokens_reached_is_length(door):
    tokens = ids(door, ANSWER)
    j = job(door, max_tokens=len(tokens))
    j.push(tokens)
    j.finish()
    assert j.finish_reason is FinishReason.LENGTH


def test_a_stop_string_asks_the_engine_to_stop_once_and_cuts_the_text(door):
    j, tokens = job(door, stop=["Beijing"]), ids(door, ANSWER + " more text after")
    streamed, stops = [], 0
    for t in tokens:
        text, stop = j.push([t])
        streamed.append(text)
        stops += stop
    final = j.finish()
    assert stops == 1 and j.finish_reason is FinishReason.STOP
    assert "".join(streamed) + final == ANSWER.split("Beijing")[0]
    assert j.engine_tokens == len(tokens)  # tokens after the stop are counted, not shown


def test_a_cancelled_request_stops_streaming_and_finishes_cancelled(door):
    j, tokens = job(door), ids(door, ANSWER)
    first, _ = j.push(tokens[:4])
    assert j.cancel() is True and j.cancel() is False  # one stop request, not two
    held, stop = j.push(tokens[4:8])
    assert held == "" and stop is False
    rest = j.finish()
    assert j.finish_reason is FinishReason.CANCELLED
    assert first + rest == door.tok.decode(tokens[:8])


def test_without_streaming_everything_comes_in_the_final_response(door):
    j, tokens = job(door, stream=False, echo=True), ids(door, ANSWER)
    assert [j.push([t])[0] for t in tokens] == [""] * len(tokens)
    assert j.finish() == "<human>:你好\n<bot>:" + ANSWER
