"""Prefix reuse: the block cache on its own, then the reference engine with it (tiny model, CPU)."""

import queue

import pytest
import torch

from ziya_trt.engine import prefix_cache as pc
from ziya_trt.engine.prefix_cache import PrefixCache
from ziya_trt.engine.request import EngineLimits, EngineRequest

LAYERS, HEADS, DIM, BT = 2, 2, 4, 4


def _kv(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(LAYERS, HEADS, n, DIM, generator=g), torch.randn(LAYERS, HEADS, n, DIM, generator=g)


def _cache(blocks: int = 16) -> PrefixCache:
    return PrefixCache(BT, blocks, LAYERS, HEADS, DIM)


def test_stored_blocks_come_back_exactly_and_one_token_is_always_left_to_compute():
    c, ids = _cache(), list(range(100, 113))  # 13 tokens: 3 full blocks
    k, v = _kv(13, 0)
    assert c.store(ids, k, v) == 3
    kd, vd = torch.zeros(LAYERS, HEADS, 20, DIM), torch.zeros(LAYERS, HEADS, 20, DIM)
    assert c.load(c.match(ids + [7, 8]), kd, vd) == 12
    assert torch.equal(kd[:, :, :12], k[:, :, :12]) and torch.equal(vd[:, :, :12], v[:, :, :12])
    # the same 12 tokens as a whole prompt: the last block is left, so prefill has a token to run
    assert len(c.match(ids[:12])) == 2
    assert len(c.match(ids[:13])) == 3


def test_a_block_is_found_only_after_the_same_prefix():
    c = _cache()
    c.store([1, 2, 3, 4, 5, 6, 7, 8, 9], *_kv(9, 1))
    assert len(c.match([1, 2, 3, 4, 5, 6, 7, 8, 0])) == 2
    assert len(c.match([1, 2, 3, 9, 5, 6, 7, 8, 0])) == 0  # first block differs: nothing after it counts
    assert len(c.match([5, 6, 7, 8, 1, 2, 3, 4, 0])) == 0  # the second block's tokens, in first place
    assert len(c.match([1, 2, 3, 4, 5, 6, 7, 0, 0])) == 1


def test_a_hash_collision_is_never_a_hit(monkeypatch):
    monkeypatch.setattr(pc, "block_key", lambda parent, tokens: b"same")
    c = _cache()
    c.store([1, 2, 3, 4, 0], *_kv(5, 2))
    assert c.match([9, 9, 9, 9, 0]) == []
    assert len(c.match([1, 2, 3, 4, 0])) == 1
    c.store([9, 9, 9, 9], *_kv(4, 3))  # the colliding block takes over the row: no leak, no wrong hit
    assert c.in_use == 1 and c.match([1, 2, 3, 4, 0]) == [] and len(c.match([9, 9, 9, 9, 0])) == 1


def test_least_recently_used_blocks_go_first_under_the_bound():
    c = _cache(blocks=4)
    a, b = [1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]
    c.store(a, *_kv(8, 3))
    c.store(b, *_kv(8, 4))
    assert c.in_use == 4
    assert len(c.match(a + [0])) == 2  # a is now the most recently used
    c.store([20, 21, 22, 23, 24], *_kv(5, 5))  # one new block: b's tail goes, never a head before its tail
    assert c.in_use == 4 and c.counters["evicted_blocks"] == 1
    assert len(c.match(a + [0])) == 2
    assert len(c.match(b + [0])) == 1
    assert len(c.match([20, 21, 22, 23, 0])) == 1


def test_a_sequence_longer_than_the_pool_keeps_its_first_blocks():
    c = _cache(blocks=2)
    ids = list(range(1, 21))  # 5 blocks
    assert c.store(ids, *_kv(20, 6)) == 2
    assert len(c.match(ids + [0])) == 2


def test_a_memory_bound_in_bytes_sets_the_pool():
    per_block = 2 * LAYERS * HEADS * BT * DIM * 4  # float32
    assert PrefixCache.for_bytes(10 * per_block + 1, BT, LAYERS, HEADS, DIM).max_blocks == 10
    assert PrefixCache.for_bytes(10 * per_block, BT, LAYERS, HEADS, DIM, torch.bfloat16).max_blocks == 20


# --- the reference engine with reuse ------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    from ziya_trt.engine.reference import load_model

    return load_model(tiny_ckpt, "float32")


def _engine(model, reuse_bytes: int, block_tokens: int = 8):
    from ziya_trt.engine.reference import ReferenceEngine

    lim = EngineLimits(max_slots=2, max_queue=8, max_input_len=400, max_seq_len=512)
    return ReferenceEngine(model, lim, reuse_bytes=reuse_bytes, block_tokens=block_tokens)


def _run(eng, ids: list[int], n: int = 12) -> tuple[list[int], int]:
    outs: queue.Queue = queue.Queue()
    eng.submit(EngineRequest(input_ids=ids, max_new_tokens=n, top_k=1, end_id=-1), outs.put)
    tokens, reused = [], 0
    while True:
        o = outs.get(timeout=60)
        assert o.error is None, o.error
        tokens += o.tokens
        reused = max(reused, o.reused_blocks)
        if o.final:
            return tokens, reused


def test_prefill_after_a_reused_prefix_gives_the_same_logits(model):
    from ziya_trt.engine.reference import SlotModel

    ids = [(i * 37) % 900 + 5 for i in range(70)]
    full = SlotModel(model, 2, 128)
    want = full.prefill(0, ids)
    part = SlotModel(model, 2, 128)
    part.prefill(1, ids[:48])  # the prefix's KV, computed by another request...
    part.k[:, 0], part.v[:, 0] = part.k[:, 1].clone(), part.v[:, 1].clone()  # ...and copied into this slot
    got = part.prefill(0, ids, start=48)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    part.k[:, 0].zero_(), part.v[:, 0].zero_()  # the new tokens really attend to the prefix's KV
    assert not torch.allclose(part.prefill(0, ids, start=48), want, atol=1e-3)


def test_multi_turn_greedy_output_is_the_same_with_and_without_reuse(model):
    """Each turn re-sends the history; with reuse it starts from the earlier turns' blocks."""
    on, off = _engine(model, reuse_bytes=1 << 24), _engine(model, reuse_bytes=0)
    try:
        history, new = [1] + [(i * 53) % 900 + 5 for i in range(40)], []
        for turn in range(4):
            a, reused_on = _run(on, history)
            b, reused_off = _run(off, history)
            assert a == b
            assert reused_off == 0
            if turn:  # the earlier turns' prompt and answer, but the last answer token, are cached
                assert reused_on == (len(history) - len(new) - 1) // 8
            new = [(turn * 11 + i * 7) % 900 + 5 for i in range(30)]
            history = history + a + new
        stats = on.stats()
        assert stats["kv_blocks_in_use"] > 0 and on.cache.counters["hit_blocks"] > 0
        # the backend's reused-blocks figure is the running total of blocks found; its memory, the slots' and pool's KV
        assert stats["kv_blocks_reused"] == on.cache.counters["hit_blocks"]
        assert stats["runtime_cpu_bytes"] == on.slots.kv_bytes + on.cache.nbytes > off.stats()["runtime_cpu_bytes"]
        assert off.stats()["kv_blocks_reused"] == 0
    finally:
        on.shutdown(1)
        off.shutdown(1)


def test_a_tiny_cache_evicts_without_ever_giving_a_wrong_answer(model):
    """Two blocks of room, many different prompts: output still equals the no-reuse engine's."""
    from ziya_trt.engine.prefix_cache import PrefixCache

    on, off = _engine(model, reuse_bytes=1, block_tokens=8), _engine(model, reuse_bytes=0)
    try:
        assert on.cache.max_blocks == 1
        on.cache = PrefixCache(8, 2, *on.cache.k.shape[1:3], on.cache.k.shape[4])
        base = [1] + list(range(10, 30))
        for j in range(6):
            ids = base[: 9 + j] + [(j * 13 + i) % 900 + 5 for i in range(20)]
            assert _run(on, ids)[0] == _run(off, ids)[0]
        assert on.cache.counters["evicted_blocks"] > 0 and on.cache.counters["hit_blocks"] > 0
    finally:
        on.shutdown(1)
        off.shutdown(1)


def test_a_failed_request_leaves_nothing_to_reuse(model):
    eng = _engine(model, reuse_bytes=1 << 24)
    try:
        def boom(active):
            raise RuntimeError("step fault")

        real, eng._step = eng._step, boom
        outs: queue.Queue = queue.Queue()
        eng.submit(EngineRequest(input_ids=[1] + list(range(10, 40)), max_new_tokens=5, top_k=1), outs.put)
        while not (o := outs.get(timeout=30)).final:
            pass
        assert o.error is not None
        eng._step = real
        assert eng.cache.in_use == 0
    finally:
        eng.shutdown(1)
