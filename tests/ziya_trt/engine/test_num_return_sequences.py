"""Several sequences for one prompt (num_return_sequences), as TensorRT-LLM's executor runs them with beam width 1
(contracts/num-return-sequences.json): each sequence its own slot and seed (the request's + its index), each output
one sequence's with its sequence_index, the request's final flag on the last sequence's last output only; a stop
ends every sequence; more sequences than slots are refused. Reference engine (tiny model) and synthetic engine,
in-process, no server."""

import queue
import threading

import pytest

from ziya_trt.engine.request import EngineLimits, EngineOutput, EngineRequest, coalesce
from ziya_trt.engine.synthetic import SyntheticEngine
from ziya_trt.errors import InvalidRequestError, ServerOverloadedError
from ziya_trt.finish import FinishReason


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    from ziya_trt.engine.reference import ReferenceEngine, load_model

    eng = ReferenceEngine(load_model(tiny_ckpt, "float32"), EngineLimits(max_slots=4, max_queue=4))
    yield eng
    eng.shutdown(1)


def run(eng, req: EngineRequest, timeout: float = 60) -> list[EngineOutput]:
    outs: queue.Queue = queue.Queue()
    eng.submit(req, outs.put)
    got = []
    while not got or not got[-1].final:
        got.append(outs.get(timeout=timeout))
    return got


def by_sequence(outs: list[EngineOutput]) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = {}
    for o in outs:
        assert o.error is None, o.error
        seqs.setdefault(o.sequence_index, []).extend(o.tokens)
    return seqs


def test_each_sequence_streams_with_its_index_and_only_the_last_end_is_final(reference):
    outs = run(reference, EngineRequest(input_ids=[5, 6, 7], max_new_tokens=6, seed=3, temperature=1.0, top_k=0,
                                        top_p=1.0, streaming=True, num_return_sequences=3, id="n3"))
    seqs = by_sequence(outs)
    assert sorted(seqs) == [0, 1, 2]
    assert all(len(t) == 6 for t in seqs.values())
    assert [o.final for o in outs].count(True) == 1 and outs[-1].final
    ends = [o for o in outs if o.sequence_final]
    assert sorted(o.sequence_index for o in ends) == [0, 1, 2]  # each sequence ends once
    assert all(o.finish_reason is FinishReason.LENGTH for o in ends)


def test_seeded_sequences_are_reproducible_and_sequence_i_is_seed_plus_i(reference):
    """Sequence i of seed s draws as a one-sequence request of seed s + i does (the executor's child seeds)."""
    kw = dict(input_ids=[9, 4, 11, 3], max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0, streaming=True)
    first = by_sequence(run(reference, EngineRequest(**kw, seed=40, num_return_sequences=3, id="a")))
    again = by_sequence(run(reference, EngineRequest(**kw, seed=40, num_return_sequences=3, id="b")))
    assert first == again
    alone = [by_sequence(run(reference, EngineRequest(**kw, seed=40 + i, id=f"c{i}")))[0] for i in range(3)]
    assert [first[i] for i in range(3)] == alone
    assert len({tuple(t) for t in first.values()}) > 1  # different seeds: (with this tiny model, these) differ


def test_the_largest_seed_wraps_for_the_next_sequences():
    assert EngineRequest([1], 1, seed=2**64 - 1).sequence_seed(1) == 0
    assert EngineRequest([1], 1).sequence_seed(2) is None


def test_greedy_sequences_are_identical(reference):
    seqs = by_sequence(run(reference, EngineRequest(input_ids=[5, 6, 7], max_new_tokens=5, top_k=1, streaming=True,
                                                    num_return_sequences=2, id="g")))
    assert seqs[0] == seqs[1]


def test_a_whole_response_per_sequence_when_not_streaming(reference):
    outs = run(reference, EngineRequest(input_ids=[5, 6, 7], max_new_tokens=4, top_k=1, num_return_sequences=2,
                                        id="w"))
    assert len(outs) == 2 and [o.final for o in outs] == [False, True]
    assert sorted(o.sequence_index for o in outs) == [0, 1] and all(len(o.tokens) == 4 for o in outs)


def test_each_sequence_takes_a_slot_and_the_queue_counts_sequences():
    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=1, vocab_size=100), tokens_per_s=1.0)
    try:
        eng.submit(EngineRequest(input_ids=[20, 21], max_new_tokens=50, num_return_sequences=2, id="two"),
                   lambda out: None)
        with pytest.raises(ServerOverloadedError):  # 2 slots + 1 queued: a second request of 2 does not fit
            eng.submit(EngineRequest(input_ids=[20, 21], max_new_tokens=50, num_return_sequences=2, id="more"),
                       lambda out: None)
        eng.submit(EngineRequest(input_ids=[20, 21], max_new_tokens=50, id="one"), lambda out: None)
    finally:
        eng.shutdown(0.1)


@pytest.mark.parametrize("n", [0, 3])
def test_more_sequences_than_slots_are_refused_by_name(n):
    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=8, vocab_size=100))
    try:
        with pytest.raises(InvalidRequestError) as ei:
            eng.submit(EngineRequest(input_ids=[20], max_new_tokens=2, num_return_sequences=n), lambda out: None)
        assert ei.value.field == "num_return_sequences" and "2 slots" in ei.value.message
    finally:
        eng.shutdown(0.1)


def test_a_stop_ends_every_sequence_and_frees_their_slots():
    eng = SyntheticEngine(EngineLimits(max_slots=3, max_queue=0, vocab_size=100), tokens_per_s=20.0,
                          first_token_s=0.0)
    try:
        outs: queue.Queue = queue.Queue()
        first = threading.Event()
        eng.submit(EngineRequest(input_ids=[20, 21], max_new_tokens=1000, streaming=True, num_return_sequences=3,
                                 id="s"), lambda o: (outs.put(o), first.set()))
        assert first.wait(10)
        assert eng.cancel("s")
        got = []
        while not got or not got[-1].final:
            got.append(outs.get(timeout=10))
        ends = [o for o in got if o.sequence_final]
        assert sorted(o.sequence_index for o in ends) == [0, 1, 2]
        assert all(o.finish_reason is FinishReason.CANCELLED for o in ends)
        assert eng.stats()["free_slots"] == 3 and eng.stats()["cancelled"] == 1  # one request cancelled
    finally:
        eng.shutdown(0.1)


def test_synthetic_sequences_replay_the_same_ids():
    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=0, vocab_size=100), tokens_per_s=500.0,
                          first_token_s=0.0)
    try:
        seqs = by_sequence(run(eng, EngineRequest(input_ids=[20, 21, 22], max_new_tokens=5, streaming=True,
                                                  num_return_sequences=2, id="r"), timeout=10))
        assert seqs == {0: [20, 21, 22, 20, 21], 1: [20, 21, 22, 20, 21]}
    finally:
        eng.shutdown(0.1)


def test_coalesce_never_merges_two_sequences():
    outs = [EngineOutput([1], sequence_index=0), EngineOutput([2], sequence_index=1),
            EngineOutput([3], sequence_index=1), EngineOutput([4], sequence_index=0, sequence_final=True),
            EngineOutput([5], sequence_index=0)]
    merged = coalesce(outs)
    assert [(o.sequence_index, o.tokens) for o in merged] == [(0, [1]), (1, [2, 3]), (0, [4]), (0, [5])]
