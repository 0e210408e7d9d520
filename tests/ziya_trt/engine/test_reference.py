"""The reference engine in-process (tiny model, CPU, no server): its in-flight batches give exactly
``model.generate``'s greedy tokens. It builds on transformers' own modules (``rotary_emb``,
``apply_rotary_pos_emb``, the layers) and ``generate`` runs transformers' KV cache, so this holds on each
transformers line the package supports (scripts/test_transformers457.sh runs it on 4.57)."""

import queue
import random

import pytest
import torch

from ziya_trt.engine.request import EngineLimits, EngineRequest


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    from ziya_trt.engine.reference import load_model

    return load_model(tiny_ckpt, "float32")


def greedy(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def collect(outs: queue.Queue) -> list[int]:
    tokens = []
    while True:
        o = outs.get(timeout=60)
        assert o.error is None, o.error
        tokens += o.tokens
        if o.final:
            return tokens


def test_in_flight_batches_give_generates_greedy_tokens(model):
    """Six requests of different lengths on three slots: they join and leave running batches."""
    from ziya_trt.engine.reference import ReferenceEngine

    rng = random.Random(3)
    cases = [([1] + [rng.randrange(5, 1000) for _ in range(rng.randint(2, 50))], rng.randint(1, 24))
             for _ in range(6)]
    eng = ReferenceEngine(model, EngineLimits(max_slots=3, max_queue=8, max_input_len=128, max_seq_len=256))
    outs: dict[int, queue.Queue] = {i: queue.Queue() for i in range(len(cases))}
    try:
        for i, (ids, n) in enumerate(cases):
            eng.submit(EngineRequest(input_ids=ids, max_new_tokens=n, id=f"r{i}", top_k=1, end_id=-1), outs[i].put)
        got = {i: collect(q) for i, q in outs.items()}
    finally:
        eng.shutdown(1)
    for i, (ids, n) in enumerate(cases):
        assert got[i] == greedy(model, ids, n), f"request {i}"
