"""A session of several sequences (n > 1, the engine's num_return_sequences) and several sessions of one response,
against a fake engine link (no server): outputs routed by sequence_index, each sequence's text and log probabilities
its own, a sequence complete at its stop string, the rest at the request's final response (the backend sends no
per-sequence end), one engine stop once every text is complete; admission takes a place per sequence; a failure in
one prompt of a response cancels the others."""

import asyncio

import numpy as np
import pytest

from tests.ziya_trt.serving.test_session import Link
from ziya_trt.errors import ServerError, ServerOverloadedError
from ziya_trt.serving.admission import LocalBudget
from ziya_trt.serving.frontdoor import FrontDoor, FrontDoorLimits, TextJob, TextRequest
from ziya_trt.serving.session import Sessions
from ziya_trt.text.sampling import SamplingParams


class StopLink(Link):
    def __init__(self):
        super().__init__()
        self.stops = []

    def stop(self, request_id, arrays):
        self.stops.append(request_id)
        return True


@pytest.fixture
def sessions(tok):
    outcomes = []
    s = Sessions(FrontDoor(tok, FrontDoorLimits(256, 512)), StopLink(), LocalBudget(4), outcomes.append, "test",
                 "reference")
    s.outcomes = outcomes
    return s


def open_n(sessions, tok, n, stop=(), logprobs=False, stream=True):
    req = TextRequest(text="<human>:hi\n<bot>:", messages=None, params=SamplingParams(max_new_tokens=16, stop=stop),
                      stream=stream, n=n, logprobs=logprobs)
    return sessions.open(sessions.admit(n), lambda door: TextJob(door, req))


def resp(tok, text, index, so_far=None):
    ids = tok.encode(text, add_bos=False)
    out = {"output_ids": np.asarray([[ids]], dtype=np.int32), "sequence_index": np.asarray([[index]], np.int32)}
    if so_far is not None:
        out["output_log_probs"] = np.asarray([[so_far]], dtype=np.float32)
    return out


def test_the_engine_request_asks_for_n_sequences_and_admission_takes_n_places(sessions, tok):
    s = open_n(sessions, tok, 3)
    s.submit(lambda out: None)
    assert sessions.link.calls[0][1]["num_return_sequences"].tolist() == [[3]]
    assert len(s.jobs) == 3 and s.jobs[1].engine_request is s.jobs[0].engine_request
    with pytest.raises(ServerOverloadedError):  # 3 of the 4 places are held
        sessions.admit(2)
    one = sessions.admit(1)  # the failed admission gave back what it took
    one.release()
    s.abandon()
    assert sessions.admit(4) is not None


def test_outputs_go_to_their_sequence_and_the_final_completes_all(sessions, tok):
    s = open_n(sessions, tok, 2)
    got = []
    for out in [s._output(resp(tok, " alpha", 1), None, False), s._output(resp(tok, " beta", 0), None, False),
                s._output(resp(tok, " gamma", 1), None, True)]:
        got += s.push_choices(out)
    text = {i: "".join(t for j, t, _ in got if j == i) for i in (0, 1)}
    ids = {w: tok.encode(w, add_bos=False) for w in (" alpha", " beta", " gamma")}
    assert text == {0: tok.decode(ids[" beta"]), 1: tok.decode(ids[" alpha"] + ids[" gamma"])}
    assert sorted(i for i, _, done in got if done) == [0, 1]
    s.finish()
    assert sessions.outcomes[-1].output_tokens == s.n_output == sum(map(len, ids.values()))


def test_a_sequence_ends_at_its_stop_string_and_the_engine_stops_when_all_have(sessions, tok):
    s = open_n(sessions, tok, 2, stop=("END",))
    first = s.push_choices(s._output(resp(tok, " one END two", 0), None, False))
    assert first == [(0, " one ", True)] and sessions.link.stops == []  # sequence 1 goes on
    assert s.push_choices(s._output(resp(tok, " more", 0), None, False)) == []  # counted, not shown
    s.push_choices(s._output(resp(tok, " x END", 1), None, False))
    assert sessions.link.stops == [s.id]  # one stop, once both texts are complete


def test_each_sequence_has_its_own_log_probabilities(sessions, tok):
    s = open_n(sessions, tok, 2, logprobs=True)
    n0 = len(tok.encode(" a", add_bos=False))
    a = s._output(resp(tok, " a", 0, [-1.0] * n0), None, False)
    b = s._output(resp(tok, " a", 1, [-2.0] * n0), None, False)  # sequence 1's start from 0, not after sequence 0's
    assert a.log_probs == [-1.0] * n0 and b.log_probs == [-2.0] * n0
    s.push_choices(a)
    s.push_choices(b)
    assert [lp for _, lp in s.logprobs(1)] == [-2.0] * n0 and [lp for _, lp in s.logprobs(0)] == [-1.0] * n0


def test_a_response_for_a_sequence_that_does_not_exist_fails_the_request(sessions, tok):
    s = open_n(sessions, tok, 2)
    out = s._output(resp(tok, " a", 5), None, False)
    assert out.final and isinstance(out.error, ServerError)


def test_one_prompts_failure_fails_the_response_and_cancels_the_others(sessions, tok):
    """The OpenAI API's merge of several prompts' engine calls: an engine error in one raises, fails that session,
    and the others' engine requests are stopped."""
    from ziya_trt.serving.http.openai.server import OpenAIServer

    a, b = open_n(sessions, tok, 1), open_n(sessions, tok, 1)

    async def run():
        got = []
        events = OpenAIServer._events(None, [a, b], 1)
        with pytest.raises(ServerError):
            async for item in events:
                got.append(item)
                if len(got) == 1:  # the first prompt has streamed; the second's engine call fails
                    sessions.link.calls[1][2]({}, "[ziya:server_error] boom", True)
        await events.aclose()
        return got

    async def feed():
        await asyncio.sleep(0)
        sessions.link.calls[0][2](resp(tok, " hello", 0), None, False)

    async def both():
        task = asyncio.ensure_future(feed())
        got = await run()
        await task
        return got

    got = asyncio.run(both())
    assert got and got[0][0] == 0
    assert b.ended and sessions.outcomes[-1].error == "server"
    assert a.id in sessions.link.stops  # the one still running is stopped


def test_a_link_that_refuses_a_later_prompt_stops_those_already_submitted(sessions, tok):
    from ziya_trt.errors import ServerShuttingDownError
    from ziya_trt.serving.http.openai.server import OpenAIServer

    a, b = open_n(sessions, tok, 1), open_n(sessions, tok, 1)
    submit = sessions.link.submit

    def refuse_second(request_id, arrays, on_event, **kw):
        if sessions.link.calls:
            raise ServerShuttingDownError("the engine link is closed")
        submit(request_id, arrays, on_event, **kw)

    sessions.link.submit = refuse_second

    async def run():
        events = OpenAIServer._events(None, [a, b], 1)
        with pytest.raises(ServerShuttingDownError):
            await anext(events)

    asyncio.run(run())
    assert b.ended and sessions.outcomes[-1].error == "shutting_down"
    assert a.id in sessions.link.stops
