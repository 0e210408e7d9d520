"""Per-request records and the pure metric functions (genai-perf / vLLM definitions).

TTFT = first response - send; E2E = last response - send; ITL = (E2E - TTFT) / (output tokens - 1);
TPOT is the same per-token decode time, reported per request; throughput is measured over first
send -> last response. Failed requests are counted, never dropped; they do not enter latencies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class RequestRecord:
    index: int
    t_send: float  # seconds, on the run's monotonic clock
    t_first: float | None = None
    t_last: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # every response's arrival
    input_tokens: int = 0
    output_tokens: int = 0  # counted with the tokenizer on the final text (or reported by the server)
    server_output_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    error_type: str | None = None
    warmup: bool = False
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.t_first is not None

    @property
    def ttft(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_send

    @property
    def e2e(self) -> float | None:
        return None if self.t_last is None else self.t_last - self.t_send

    @property
    def itl(self) -> float | None:
        if not self.ok or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def gaps(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ttft=self.ttft, e2e=self.e2e, itl=self.itl)
        return d


@dataclass(frozen=True)
class Stat:
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, xs: list[float]) -> "Stat | None":
        if not xs:
            return None
        s = sorted(xs)
        return cls(sum(s) / len(s), percentile(s, 50), percentile(s, 90), percentile(s, 99), s[-1], len(s))


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    k = (len(sorted_xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


@dataclass(frozen=True)
class Slo:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))

    def met(self, r: RequestRecord) -> bool:
        if not r.ok:
            return False
        checks = [(self.ttft_ms, r.ttft), (self.tpot_ms, r.itl if r.itl is not None else 0.0), (self.e2e_ms, r.e2e)]
        return all(limit is None or v * 1000 <= limit for limit, v in checks)


@dataclass(frozen=True)
class Summary:
    requests: int
    completed: int
    errors: int
    error_types: dict
    duration_s: float
    request_throughput: float
    output_token_throughput: float
    total_output_tokens: int
    total_input_tokens: int
    goodput: float | None  # requests/s meeting every SLO
    ttft: Stat | None
    itl: Stat | None
    tpot: Stat | None
    e2e: Stat | None
    chunk_gap: Stat | None  # every gap between consecutive responses, all requests

    def to_dict(self) -> dict:
        return asdict(self)


def calculate_metrics(records: list[RequestRecord], slo: Slo | None = None) -> Summary:
    recs = [r for r in records if not r.warmup]
    ok = [r for r in recs if r.ok]
    errors = [r for r in recs if not r.ok]
    types: dict[str, int] = {}
    for r in errors:
        types[r.error_type or "unknown"] = types.get(r.error_type or "unknown", 0) + 1
    if recs:
        start = min(r.t_send for r in recs)
        end = max([r.t_last for r in ok if r.t_last is not None] or [start])
    else:
        start = end = 0.0
    dur = max(end - start, 1e-9)
    out_tokens = sum(r.output_tokens for r in ok)
    itls = [r.itl for r in ok if r.itl is not None]
    return Summary(
        requests=len(recs),
        completed=len(ok),
        errors=len(errors),
        error_types=types,
        duration_s=dur if recs else 0.0,
        request_throughput=len(ok) / dur if ok else 0.0,
        output_token_throughput=out_tokens / dur if ok else 0.0,
        total_output_tokens=out_tokens,
        total_input_tokens=sum(r.input_tokens for r in ok),
        goodput=(sum(slo.met(r) for r in ok) / dur) if slo is not None and slo.any and ok else None,
        ttft=Stat.of([r.ttft for r in ok]),
        itl=Stat.of(itls),
        tpot=Stat.of(itls),
        e2e=Stat.of([r.e2e for r in ok]),
        chunk_gap=Stat.of([g for r in ok for g in r.gaps()]),
    )
