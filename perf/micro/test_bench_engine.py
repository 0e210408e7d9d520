"""Reference-engine throughput at concurrency 1 vs 8 on the tiny Ziya-shaped model (in-process, no
server). Run: bash scripts/test.sh perf/micro/test_bench_engine.py --benchmark-enable -s
The figure that matters is tokens/s = 8 requests x 32 tokens / time; the ratio prints at the end."""

import threading

import pytest

from ziya_trt.engine.reference import ReferenceEngine
from ziya_trt.engine.request import EngineLimits, EngineRequest
from ziya_trt.fixtures.tiny import build_model

N_REQ, N_TOK = 8, 32
RESULTS = {}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ziya_trt.engine.reference import load_model

    return load_model(build_model(tmp_path_factory.mktemp("bench-model"), vocab_size=1000), "float32")


def run_batch(engine, concurrency: int, tag: str) -> None:
    """N_REQ requests, at most ``concurrency`` in flight at once."""
    sem = threading.Semaphore(concurrency)
    done = threading.Semaphore(0)

    def sink(out):
        if out.final:
            sem.release()
            done.release()

    for i in range(N_REQ):
        sem.acquire()
        engine.submit(EngineRequest([1] + list(range(10, 42)), N_TOK, id=f"{tag}-{i}", top_k=1), sink)
    for _ in range(N_REQ):
        done.acquire()


@pytest.mark.parametrize("concurrency", [1, 8])
def test_reference_engine_throughput(benchmark, tiny_model, concurrency):
    engine = ReferenceEngine(tiny_model, EngineLimits(max_slots=8, max_queue=8, max_input_len=64, max_seq_len=128))
    counter = iter(range(10**6))
    try:
        benchmark.pedantic(lambda: run_batch(engine, concurrency, f"c{concurrency}-{next(counter)}"), rounds=5, iterations=1)
    finally:
        engine.shutdown(1)
    if benchmark.stats is not None:
        RESULTS[concurrency] = N_REQ * N_TOK / benchmark.stats.stats.mean
        benchmark.extra_info["tokens_per_s"] = round(RESULTS[concurrency], 1)
        if len(RESULTS) == 2:
            print(f"\nreference engine, tiny model: {RESULTS[1]:.0f} tok/s at concurrency 1, "
                  f"{RESULTS[8]:.0f} tok/s at 8 ({RESULTS[8] / RESULTS[1]:.1f}x)")
