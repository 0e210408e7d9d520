"""What the server saw during a sweep point: its Prometheus metrics scraped before and after, and the difference.

Only this project's ``ziya_*`` series and Triton's ``nv_*`` ones are kept. Counters and histograms are
differenced (before → after); gauges keep their value after. The digest puts the server's own view next to the
client's: requests by finish reason, errors by kind, tokens, and TTFT / ITL / E2E / queue-time quantiles
interpolated from the histogram buckets, as PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import re
import time
import urllib.request

KEEP = ("ziya_", "nv_")
Samples = dict[str, float]  # 'name{a="1",b="2"}' -> value


def key(name: str, labels: dict[str, str]) -> str:
    """The sample as exposition text writes it: 'name{a="1",b="2"}', label values escaped."""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return name + "{" + ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items())) + "}"


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Exposition text to samples, and each family's type."""
    from prometheus_client.parser import text_string_to_metric_families

    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith(KEEP):
            continue
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[key(s.name, s.labels)] = s.value
    return samples, types


def scrape(urls: tuple[str, ...], timeout_s: float = 5.0) -> dict:
    """Every URL's samples merged (the OpenAI API's carry ``api="openai"``), with the errors of those that failed."""
    samples, types, errors = {}, {}, {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
                s, t = parse(r.read().decode("utf-8", "replace"))
        except Exception as e:  # noqa: BLE001 - a metrics endpoint never fails the run
            errors[url] = f"{type(e).__name__}: {e}"[:300]
            continue
        samples |= s
        types |= t
    return {"t": time.time(), "samples": samples, "types": types, "errors": errors}


def _family(sample_key: str, types: dict[str, str]) -> str | None:
    name = sample_key.split("{", 1)[0]
    for suffix in ("", "_bucket", "_count", "_sum", "_total"):
        base = name.removesuffix(suffix) if suffix else name
        if base in types:
            return base
    return None


def delta(before: dict, after: dict) -> Samples:
    """Counters and histograms: after - before; gauges: after."""
    types = after["types"] | before["types"]
    out = {}
    for k, v in after["samples"].items():
        fam = _family(k, types)
        kind = types.get(fam, "untyped") if fam else "untyped"
        out[k] = v if kind == "gauge" else v - before["samples"].get(k, 0.0)
    return out


def _labels(sample_key: str) -> dict[str, str]:
    body = sample_key.split("{", 1)[1][:-1]
    unesc = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
    return {k: re.sub(r'\\[\\"n]', lambda m: unesc[m.group(0)], v) for k, v in _LABEL.findall(body)}


def total(d: Samples, name: str, by: str | None = None) -> float | dict[str, float]:
    """The sum of ``name`` over every label set, or per value of the label ``by``."""
    if by is None:
        return sum(v for k, v in d.items() if k.split("{", 1)[0] == name)
    out: dict[str, float] = {}
    for k, v in d.items():
        if k.split("{", 1)[0] == name:
            lab = _labels(k).get(by, "")
            out[lab] = out.get(lab, 0.0) + v
    return out


def quantile(d: Samples, name: str, q: float) -> float | None:
    """``histogram_quantile(q, sum by (le) (delta))``: linear within the bucket; None without observations."""
    buckets: dict[float, float] = {}
    for k, v in d.items():
        if k.split("{", 1)[0] == f"{name}_bucket":
            le = _labels(k)["le"]
            b = math.inf if le == "+Inf" else float(le)
            buckets[b] = buckets.get(b, 0.0) + v
    if not buckets or buckets.get(math.inf, 0.0) <= 0:
        return None
    bounds = sorted(buckets)
    rank, prev_bound, prev_count = q * buckets[math.inf], 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound  # above the highest finite bucket: its bound, as Prometheus says
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / (c - prev_count) if c > prev_count else 0)
        prev_bound, prev_count = b, c
    return prev_bound


def digest(d: Samples) -> dict:
    """The server's own view of a sweep point."""
    out: dict = {
        "requests": total(d, "ziya_requests_total", by="finish_reason"),
        "errors": total(d, "ziya_request_errors_total", by="kind"),
        "prompt_tokens": total(d, "ziya_prompt_tokens_total"),
        "prompt_cached_tokens": total(d, "ziya_prompt_cached_tokens_total"),
        "generation_tokens": total(d, "ziya_generation_tokens_total"),
        # prometheus_client's parser names every counter sample ``*_total``, Triton's included
        "triton_success": total(d, "nv_inference_request_success_total", by="model"),
        "triton_failure": total(d, "nv_inference_request_failure_total", by="model"),
    }
    for short, name in (("ttft", "ziya_time_to_first_token_seconds"), ("itl", "ziya_inter_token_latency_seconds"),
                        ("e2e", "ziya_e2e_request_latency_seconds"), ("queue", "ziya_engine_queue_time_seconds")):
        n = total(d, f"{name}_count")
        if n:
            out[short] = {"count": n, "mean_s": total(d, f"{name}_sum") / n,
                          "p50_s": quantile(d, name, 0.5), "p99_s": quantile(d, name, 0.99)}
    return out


def record(before: dict, after: dict) -> dict:
    d = delta(before, after)
    return {"before": before, "after": after, "delta": d, "digest": digest(d),
            "errors": before["errors"] | after["errors"]}


def print_digests(points: list[dict], con) -> None:
    """One line per point: what the server counted, beside the client's figures."""
    from rich.table import Table

    rows = [p for p in points if p.get("server_metrics")]
    if not rows:
        return
    t = Table(title="what the server saw (its metrics, after - before)")
    for col in ("point", "requests", "errors", "prompt tok", "cached tok", "gen tok", "TTFT p50 server / client (ms)"):
        t.add_column(col, justify="right")
    for p in rows:
        g = p["server_metrics"]["digest"]
        client = (p["summary"].get("ttft") or {}).get("p50")
        server = (g.get("ttft") or {}).get("p50_s")
        t.add_row(p["label"], f"{sum(g['requests'].values()):.0f}", f"{sum(g['errors'].values()):.0f}",
                  f"{g['prompt_tokens']:.0f}", f"{g['prompt_cached_tokens']:.0f}", f"{g['generation_tokens']:.0f}",
                  f"{'-' if server is None else f'{server * 1000:.1f}'} / {'-' if client is None else f'{client * 1000:.1f}'}")
    from .report import print_wide

    print_wide(t, con)
    for p in rows:
        for url, err in p["server_metrics"]["errors"].items():
            con.print(f"[yellow]{p['label']}: could not scrape {url}: {err}[/]")
