"""The engine's live figures on the HTTP port's ``/metrics`` too, beside the OpenAI API's own series: what a
autoscaler or an inference gateway reads (requests running and queued, KV-cache use) without a second scrape target.

They are read, at each scrape, from tritonserver's metrics port, where the engine model exports them: the
``tensorrt_llm`` backend's ``nv_trt_llm_*`` families (the stand-ins export the same, ``triton/backend_metrics.py``)
and the Python models' ``ziya_engine_*`` gauges (``triton/gauges.py``). One path for every engine: nothing here
knows which is served. A metrics port that does not answer leaves them out of that scrape (a scrape never fails
because of it) and says so in ``ziya_engine_metrics_up``."""

from __future__ import annotations

import logging

from ..triton.backend_metrics import FAMILIES
from ..triton.gauges import ENGINE_GAUGES, FRONT_DOOR_GAUGES, KV_GAUGES

log = logging.getLogger(__name__)

FORWARDED = frozenset(
    [f.name for f in FAMILIES]
    + [name.removesuffix("_total") for name, _, _ in (*ENGINE_GAUGES.values(), *KV_GAUGES.values(),
                                                       *FRONT_DOOR_GAUGES.values())]
)  # as the text parser names families: a counter without its _total
UP = "ziya_engine_metrics_up"
TIMEOUT_S = 2.0


def forwarded(text: str) -> list:
    """The engine's families in tritonserver's exposition ``text``, parsed."""
    from prometheus_client.parser import text_string_to_metric_families

    return [f for f in text_string_to_metric_families(text) if f.name in FORWARDED]


def exposition(families: list, up: bool) -> bytes:
    """``families`` (parsed) and the ``up`` gauge in Prometheus' text format."""
    import prometheus_client as pc
    from prometheus_client.core import GaugeMetricFamily

    class _Fixed:
        def collect(self):
            yield GaugeMetricFamily(UP, "1 when this scrape read the engine's figures from tritonserver's metrics "
                                        "port, else 0 (they are left out)", value=1.0 if up else 0.0)
            yield from families

    registry = pc.CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return pc.generate_latest(registry)


async def engine_exposition(session, metrics_url: str | None) -> bytes:
    """The engine's families, read now from ``metrics_url`` with the aiohttp ``session``."""
    import aiohttp

    if not metrics_url:
        return exposition([], up=False)
    try:
        async with session.get(metrics_url, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                               headers={"Accept-Encoding": "identity"}) as r:  # the guard does not decompress
            r.raise_for_status()
            text = await r.text()
        return exposition(forwarded(text), up=True)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.debug("tritonserver's metrics were not read (%s): the engine's figures are left out", e)
        return exposition([], up=False)
