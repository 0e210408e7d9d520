"""The tensorrt_llm backend's metric families as the engine stand-ins export them: the same names, kinds, help,
labels and label values as the backend (contracts/backend-metrics.json), and the figures each reads."""

import json

import pytest

from tests.contracts import ROOT
from ziya_trt.engine.request import EngineLimits, EngineRequest
from ziya_trt.engine.synthetic import SyntheticEngine
from ziya_trt.serving.triton import backend_metrics as bm

CONTRACT = json.loads((ROOT / "contracts" / "backend-metrics.json").read_text())


def contract_families(batching: str = "inflight") -> list[dict]:
    """The backend's families for a config's batching type (the model-type family is v1's or the in-flight
    batcher's)."""
    other = "nv_trt_llm_v1_metrics" if batching == "inflight" else "nv_trt_llm_inflight_batcher_metrics"
    return [f for f in CONTRACT["families"] if f["name"] != other]


def test_the_families_are_the_backends_with_every_label_and_value():
    want = contract_families()
    assert [f.name for f in bm.FAMILIES] == [f["name"] for f in want]
    for f, c in zip(bm.FAMILIES, want):
        assert (f.kind, f.help, f.label) == (c["kind"], c["help"], c["label"]), f.name
        assert list(f.values) == [v["value"] for v in c["values"]], f.name
        assert list(f.buckets) == c.get("buckets", []), f.name
    assert list(bm.BASE_LABELS) == CONTRACT["labels"]["keys_in_order"][:2]


class FakeMetric:
    def __init__(self, labels, buckets=None):
        self.labels, self.buckets = labels, buckets
        self.value, self.observed = 0.0, []

    def increment(self, delta):
        self.value += delta

    def observe(self, v):
        self.observed.append(v)


class FakeFamily:
    """Stands in for ``pb_utils.MetricFamily``, which exists only inside a Python-backend stub."""

    GAUGE, COUNTER, HISTOGRAM = "gauge", "counter", "histogram"
    made: list = []

    def __init__(self, name, description, kind):
        self.name, self.description, self.kind, self.metrics = name, description, kind, []
        FakeFamily.made.append(self)

    def Metric(self, labels, buckets=None):  # noqa: N802 (the Python backend's name)
        m = FakeMetric(labels, buckets)
        self.metrics.append(m)
        return m


class FakePb:
    MetricFamily = FakeFamily


@pytest.fixture
def engine():
    eng = SyntheticEngine(EngineLimits(max_slots=4, max_queue=2, max_input_len=100, max_seq_len=200, vocab_size=100),
                          tokens_per_s=20.0, first_token_s=0.0, skip_ids=frozenset(), block_tokens=16)
    yield eng
    eng.shutdown(0.1)


class Service:
    def __init__(self, engine):
        self.engine = engine

    def stats(self):
        return self.engine.stats()


def exported(period="${stats_check_period_ms}", engine=None):
    FakeFamily.made = []
    args = {"model_name": "tensorrt_llm", "model_version": "1",
            "model_config": json.dumps({"parameters": {"stats_check_period_ms": {"string_value": period}}})}
    m = bm.mirror(FakePb, Service(engine), args)
    m.close()  # driven by sync() in the tests
    return m, {f.name: f for f in FakeFamily.made}


def sample(families, name, value):
    fam = families[name]
    return next(m for m in fam.metrics if value in m.labels.values()).value


def test_each_family_is_made_once_with_one_metric_per_value_labelled_as_the_backend_labels(engine):
    m, fams = exported(engine=engine)
    assert list(fams) == [f["name"] for f in contract_families()]
    for c in contract_families():
        fam = fams[c["name"]]
        assert (fam.kind, fam.description) == (c["kind"], c["help"])
        assert [mt.labels for mt in fam.metrics] == [{"model": "tensorrt_llm", "version": "1", c["label"]: v["value"]}
                                                    for v in c["values"]]
        if c["kind"] == "histogram":
            assert fam.metrics[0].buckets == c["buckets"]
    assert m.period_s == 0.1  # the backend's default for an unset stats_check_period_ms
    assert exported("250", engine)[0].period_s == 0.25


def test_the_request_and_kv_figures_follow_the_engine(engine):
    m, fams = exported(engine=engine)
    for i, n in enumerate((20, 40)):
        engine.submit(EngineRequest(input_ids=list(range(10, 10 + n)), max_new_tokens=100, id=f"r{i}"), lambda o: None)
    from tests.polling import wait_until

    assert wait_until(lambda: engine.stats()["context"] == 0 and engine.stats()["active"] == 2)
    m.sync()
    s = engine.stats()
    req, kv = bm.REQUEST.name, bm.KV_CACHE.name
    assert [sample(fams, req, v) for v in bm.REQUEST.values] == [2, 4, 2, 0, 0]
    used = sample(fams, kv, "used")
    assert 2 + 3 <= used <= s["kv_blocks_used"]  # 20 and 40 prompt tokens, 16 a block
    assert sample(fams, kv, "max") == 4 * 13 and sample(fams, kv, "tokens_per") == 16
    assert sample(fams, kv, "free") == 4 * 13 - used
    assert sample(fams, kv, "fraction") == pytest.approx(used / 52)
    assert sample(fams, bm.GENERAL.name, "iteration_counter") > 0
    engine.cancel("r0")
    engine.cancel("r1")
    assert wait_until(lambda: engine.stats()["active"] == 0)
    m.sync()
    assert sample(fams, req, "active") == 0 and sample(fams, kv, "used") == 0
    assert sample(fams, kv, "free") == 52 and sample(fams, kv, "fraction") == 0
    # each request's end observed once in the token-length histograms
    assert sorted(fams[bm.INPUT_LEN.name].metrics[0].observed) == [20.0, 40.0]
    assert len(fams[bm.OUTPUT_LEN.name].metrics[0].observed) == 2


def test_readings_give_every_gauge_and_counter_from_the_stats():
    stats = {"active": 3, "max_active": 8, "scheduled": 3, "context": 1, "context_tokens": 120,
             "kv_blocks_max": 64, "kv_blocks_used": 16, "kv_tokens_per_block": 32, "kv_blocks_reused": 5,
             "runtime_cpu_bytes": 1024, "iteration_time": 1700000000.25, "iterations": 77}
    r = bm.readings(stats)
    assert set(r) == {(f.name, v) for f in bm.FAMILIES if f.kind != "histogram" for v in f.values}
    assert r[(bm.REQUEST.name, "waiting")] == 0 and r[(bm.REQUEST.name, "max")] == 8
    assert r[(bm.KV_CACHE.name, "free")] == 48 and r[(bm.KV_CACHE.name, "fraction")] == 0.25
    assert r[(bm.KV_CACHE.name, "reused")] == 5 and r[(bm.RUNTIME_MEMORY.name, "cpu")] == 1024
    assert r[(bm.INFLIGHT_BATCHER.name, "generation_requests")] == 2
    assert r[(bm.INFLIGHT_BATCHER.name, "total_context_tokens")] == 120
    assert r[(bm.GENERAL.name, "timestamp")] == 1700000000250000 and r[(bm.GENERAL.name, "iteration_counter")] == 77
    assert bm.readings(stats | {"kv_blocks_max": 0, "kv_blocks_used": 0})[(bm.KV_CACHE.name, "fraction")] == 0


@pytest.mark.parametrize("raw, ms", [("100", 100), ("20", 20), ("${stats_check_period_ms}", 100), ("", 100)])
def test_the_period_is_the_configs_stats_check_period(raw, ms):
    cfg = {"parameters": {"stats_check_period_ms": {"string_value": raw}}}
    assert bm.period_ms(cfg) == ms and bm.period_ms(json.dumps(cfg)) == ms
    assert bm.period_ms({}) == 100
