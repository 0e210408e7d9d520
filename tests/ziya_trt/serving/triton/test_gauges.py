"""GaugeMirror: gauges follow the values by increments, and are touched only on a change."""

import time

from ziya_trt.serving.triton.gauges import GaugeMirror


class FakeGauge:
    """Stands in for a Triton metric, which exists only inside a Python-backend stub."""

    def __init__(self):
        self.value, self.calls = 0.0, 0

    def increment(self, delta):
        self.value += delta
        self.calls += 1


def test_gauges_follow_values_by_increments_only_on_a_change():
    values = {"active": 0, "tokens": 0}
    gauges = {k: FakeGauge() for k in values}
    m = GaugeMirror(lambda: dict(values), gauges, period_s=3600)  # driven by sync() here
    try:
        for active, tokens in [(3, 10), (3, 10), (1, 25), (0, 25), (0, 25)]:
            values.update(active=active, tokens=tokens)
            m.sync()
            assert gauges["active"].value == active and gauges["tokens"].value == tokens
        assert gauges["active"].calls == 3 and gauges["tokens"].calls == 2
    finally:
        m.close()


def test_the_thread_syncs_every_period_and_stops_on_close():
    values = {"n": 0}
    g = FakeGauge()
    m = GaugeMirror(lambda: dict(values), {"n": g}, period_s=0.005)
    values["n"] = 7
    deadline = time.monotonic() + 5
    while g.value != 7 and time.monotonic() < deadline:
        time.sleep(0.005)
    m.close()
    values["n"] = 9
    time.sleep(0.05)
    assert g.value == 7
