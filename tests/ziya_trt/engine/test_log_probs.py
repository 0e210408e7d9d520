"""Log probabilities in the engines (no server): the sampler's, as TensorRT-LLM takes them with normalize_log_probs
false (contracts/log-probs.json: log-softmax over the whole vocabulary of the logits the token was chosen from), the
loop's emission beside the tokens, ``coalesce``'s merge, the synthetic engine's 0.0, and the reference engine's
against transformers."""

import queue
from types import SimpleNamespace

import pytest
import torch

from ziya_trt.engine.request import EngineLimits, EngineOutput, EngineRequest, coalesce
from ziya_trt.engine.sampler import Sampler
from ziya_trt.errors import ServerError
from ziya_trt.text.sampling import SamplingParams

# float32 on both sides, but the reference engine's slot KV cache and transformers' full forward sum in different
# orders: measured, they differ by at most 4.8e-7 (one float32 step at -6.5) over 8 batched greedy requests of 4 to 30
# tokens; 1e-5 leaves room for that and still catches any other distribution (a temperature or a penalty left in or
# out moves a log probability by far more)
TOL = 1e-5


def req(**kw):
    d = dict(greedy=False, temperature=1.0, top_k=0, top_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
             frequency_penalty=0.0, bad_words=[], end_id=None, min_tokens=0, return_log_probs=True)
    return SimpleNamespace(**{**d, **kw})


LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, 3.0, 0.0])


def test_greedy_gives_the_argmax_and_its_log_softmax():
    token, lp = Sampler(0).choose(LOGITS, req(greedy=True), [], [])
    assert token == 4 and lp == pytest.approx(float(torch.log_softmax(LOGITS, -1)[4]), abs=1e-6)


def test_nothing_is_computed_for_a_request_that_does_not_ask():
    assert Sampler(0).choose(LOGITS, req(greedy=True, return_log_probs=False), [], []) == (4, None)
    assert Sampler(0).choose(LOGITS, req(return_log_probs=False), [], [])[1] is None


def test_the_log_probability_is_of_the_penalised_logits():
    """Repetition penalty on token 4 (seen): the distribution the token came from, not the model's raw one."""
    token, lp = Sampler(0).choose(LOGITS, req(greedy=True, repetition_penalty=2.0), [4], [4])
    penalised = LOGITS.clone()
    penalised[4] = 1.5
    assert token == 0 and lp == pytest.approx(float(torch.log_softmax(penalised, -1)[0]), abs=1e-6)


def test_a_greedy_temperature_scales_as_tensorrt_llm_scales_it():
    """TensorRT-LLM multiplies by 1 / (temperature + 1e-6), greedy requests included; the fronts send 1 instead."""
    _, lp = Sampler(0).choose(LOGITS, req(greedy=True, temperature=0.5), [], [])
    assert lp == pytest.approx(float(torch.log_softmax(LOGITS / (0.5 + 1e-6), -1)[4]), abs=1e-6)
    _, lp0 = Sampler(0).choose(LOGITS, req(greedy=True, temperature=0.0), [], [])
    assert lp0 == pytest.approx(0.0, abs=1e-6)  # at 0 the scale is 1e6: the argmax takes all the mass


def test_a_sampled_token_is_over_the_whole_vocabulary_not_renormalised_to_top_k():
    s = Sampler(7)
    for _ in range(20):
        token, lp = s.choose(LOGITS, req(temperature=0.7, top_k=2), [], [])
        assert token in (0, 4)  # the top 2
        assert lp == pytest.approx(float(torch.log_softmax(LOGITS / 0.7, -1)[token]), abs=1e-6)
        within_top_2 = float(torch.log_softmax((LOGITS / 0.7)[[0, 4]], -1)[[0, 4].index(token)])
        assert lp < within_top_2  # normalize_log_probs would have given this one


def test_a_banned_token_is_never_chosen_and_the_rest_still_sum_to_one():
    s = Sampler(1)
    for _ in range(20):
        token, lp = s.choose(LOGITS, req(temperature=1.0, end_id=4, min_tokens=5), [], [])
        assert token != 4 and lp < 0.0


def test_coalesce_merges_the_log_probs_beside_the_tokens():
    a = EngineOutput([1, 2], log_probs=[-0.1, -0.2])
    b = EngineOutput([3], final=True, log_probs=[-0.3])
    (m,) = coalesce([a, b])
    assert m.tokens == [1, 2, 3] and m.log_probs == [-0.1, -0.2, -0.3] and m.final
    assert coalesce([EngineOutput([1]), EngineOutput([2])])[0].log_probs is None  # none asked: none made
    # a response with no new token still merges (a bare final)
    assert coalesce([a, EngineOutput([], final=True, log_probs=[])])[0].log_probs == [-0.1, -0.2]
    err = EngineOutput([], final=True, error=ServerError("boom"))
    assert [o.log_probs for o in coalesce([a, err])] == [[-0.1, -0.2], None]


def test_a_greedy_request_that_asks_goes_with_temperature_1():
    p = SamplingParams(temperature=0.0)
    asked = EngineRequest.from_params([1, 5], p, end_id=2, pad_id=0, return_log_probs=True)
    assert asked.greedy and asked.top_k == 1 and asked.temperature == 1.0 and asked.return_log_probs
    assert EngineRequest.from_params([1, 5], p, end_id=2, pad_id=0).temperature == 0.0  # unchanged otherwise
    sampled = EngineRequest.from_params([1, 5], SamplingParams(temperature=0.7), end_id=2, pad_id=0,
                                        return_log_probs=True)
    assert sampled.temperature == 0.7


def collect(q: queue.Queue) -> list[EngineOutput]:
    outs = []
    while True:
        o = q.get(timeout=60)
        assert o.error is None, o.error
        outs.append(o)
        if o.final:
            return outs


def test_the_synthetic_replay_is_certain_each_log_probability_is_0():
    from ziya_trt.engine.synthetic import SyntheticEngine, synthetic_tokens

    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=2, vocab_size=100), tokens_per_s=500.0,
                          first_token_s=0.0, skip_ids=frozenset())
    try:
        q: queue.Queue = queue.Queue()
        eng.submit(EngineRequest(input_ids=[20, 21, 22], max_new_tokens=7, streaming=True, return_log_probs=True),
                   q.put)
        outs = collect(q)
        plain: queue.Queue = queue.Queue()
        eng.submit(EngineRequest(input_ids=[20, 21], max_new_tokens=3, streaming=True), plain.put)
        assert all(o.log_probs is None for o in collect(plain))
    finally:
        eng.shutdown(1)
    assert [t for o in outs for t in o.tokens] == synthetic_tokens([20, 21, 22], 7)
    assert all(len(o.log_probs) == len(o.tokens) for o in outs)
    assert [lp for o in outs for lp in o.log_probs] == [0.0] * 7


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    from ziya_trt.engine.reference import load_model

    return load_model(tiny_ckpt, "float32")


def transformers_log_probs(model, ids: list[int], out: list[int]) -> list[float]:
    """Each generated token's log-softmax under one full forward of prompt + output (float32)."""
    with torch.inference_mode():
        logits = model(torch.tensor([ids + out])).logits[0].float()
    lps = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)
    return [float(lps[k, t]) for k, t in enumerate(out)]


@pytest.mark.parametrize("streaming", [True, False])
def test_the_reference_engine_gives_transformers_log_probs(model, streaming):
    """Three greedy requests in one batch; echo of the prompt on the non-streamed one: log probs for its tail only."""
    from ziya_trt.engine.reference import ReferenceEngine

    cases = [([1, 50, 60, 70], 9), ([1, 300, 301], 5), ([1] + list(range(100, 140)), 12)]
    eng = ReferenceEngine(model, EngineLimits(max_slots=2, max_queue=4, max_input_len=128, max_seq_len=256))
    qs = [queue.Queue() for _ in cases]
    try:
        for i, (ids, n) in enumerate(cases):
            eng.submit(EngineRequest(input_ids=ids, max_new_tokens=n, id=f"r{i}", top_k=1, end_id=-1,
                                     streaming=streaming, exclude_input=streaming, return_log_probs=True), qs[i].put)
        got = [collect(q) for q in qs]
    finally:
        eng.shutdown(1)
    for (ids, n), outs in zip(cases, got):
        tokens = [t for o in outs for t in o.tokens]
        lps = [lp for o in outs for lp in o.log_probs]
        out = tokens if streaming else tokens[len(ids):]
        assert len(out) == len(lps) == n
        assert lps == pytest.approx(transformers_log_probs(model, ids, out), abs=TOL)
