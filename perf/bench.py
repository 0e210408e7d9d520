"""A benchmark run: a sweep of load points against one endpoint, with outputs written to a folder."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ziya_trt.client import AsyncZiyaClient

from . import process_cpu, report, server_metrics
from .load import LoadConfig, run_load
from .metrics import Slo, calculate_metrics
from .workload import Item


MODES = ("text", "token", "openai")
SETTLE_S = 0.3


@dataclass
class BenchConfig:
    url: str  # grpc:// or http:// of the server (text and token modes)
    model: str = "ziya"  # the text front door (text and openai modes)
    # text: through the front door; token: the client tokenises and calls the engine model directly;
    # openai: the OpenAI-compatible chat endpoint (streaming). Several: each load point runs each, in turn
    modes: tuple[str, ...] = ("text",)
    engine_model: str = "tensorrt_llm"  # what token mode calls
    openai_url: str | None = None  # base URL of the OpenAI-compatible API (…/v1)
    template: str = "ziya"
    points: list[LoadConfig] = field(default_factory=list)
    slo: Slo = Slo()
    known_ttft_s: float | None = None  # the synthetic engine's configured figures, when known
    known_itl_s: float | None = None
    timeout_s: float = 120.0
    metrics_urls: tuple[str, ...] = ()  # the server's /metrics, scraped before and after each point
    cpu: process_cpu.Watch | None = None  # the server's processes, read around each point's measured requests

    def __post_init__(self):
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"mode: {', '.join(bad) or 'none given'}; use {', '.join(MODES)}")
        if "openai" in self.modes and not self.openai_url:
            raise ValueError("mode openai needs the server's OpenAI-compatible URL (--openai-url)")


def label(cfg: LoadConfig, mode: str | None = None) -> str:
    point = (f"rate={cfg.rate:g}" + (f",max{cfg.concurrency}" if cfg.concurrency else "") if cfg.open_loop
             else f"c={cfg.concurrency}")
    return f"{mode} {point}" if mode else point


def make_client(cfg: BenchConfig, mode: str, tokenizer):
    if mode == "openai":
        from .openai_client import AsyncOpenAIClient

        return AsyncOpenAIClient(cfg.openai_url, cfg.model, timeout_s=cfg.timeout_s)
    if mode == "token":
        return AsyncZiyaClient(cfg.url, model=cfg.engine_model, mode="token", template=cfg.template,
                               timeout_s=cfg.timeout_s, tokenizer=tokenizer)
    return AsyncZiyaClient(cfg.url, model=cfg.model, timeout_s=cfg.timeout_s)


def overhead(summary, known_ttft: float | None, known_itl: float | None) -> dict | None:
    """Measured minus known, for the synthetic engine: what the serving stack and client add."""
    if known_ttft is None or summary.ttft is None:
        return None
    out = {"known_ttft_ms": known_ttft * 1000, "ttft_p50_ms": summary.ttft.p50 * 1000,
           "added_ttft_p50_ms": (summary.ttft.p50 - known_ttft) * 1000,
           "added_ttft_p99_ms": (summary.ttft.p99 - known_ttft) * 1000}
    if known_itl is not None and summary.itl is not None:
        out |= {"known_itl_ms": known_itl * 1000, "itl_p50_ms": summary.itl.p50 * 1000,
                "added_itl_p50_ms": (summary.itl.p50 - known_itl) * 1000,
                "added_itl_p99_ms": (summary.itl.p99 - known_itl) * 1000}
    if known_itl is not None and summary.chunk_gap is not None:
        out["added_chunk_gap_p99_ms"] = (summary.chunk_gap.p99 - known_itl) * 1000
    return out


def run_point(cfg: BenchConfig, load: LoadConfig, items: list[Item], tokenizer, progress=None,
              mode: str | None = None) -> dict:
    count = (lambda text: tokenizer.count(text, add_bos=False)) if tokenizer is not None else None
    mode = mode or cfg.modes[0]
    name = label(load, mode if len(cfg.modes) > 1 else None)

    async def go():
        client = make_client(cfg, mode, tokenizer)
        task = progress.add_task(name, total=load.num_requests) if progress else None
        done = lambda r: progress.advance(task) if progress else None  # noqa: E731
        try:
            return await run_load(client, items, load, count, on_done=done, on_phase=mark)
        finally:
            await client.close()

    snaps: dict[str, dict] = {}

    def mark(phase: str) -> None:
        if cfg.cpu is not None:
            snaps[phase] = cfg.cpu.snapshot()

    before = server_metrics.scrape(cfg.metrics_urls) if cfg.metrics_urls else None
    t0 = time.time()
    records = asyncio.run(go())
    summary = calculate_metrics(records, cfg.slo)
    cpu = None
    if len(snaps) == 2:
        tokens = sum(r.output_tokens for r in records if not r.warmup)
        cpu = cfg.cpu.result(snaps["measured"], snaps["done"], tokens)
    seen = None
    if before is not None:
        time.sleep(SETTLE_S)  # a request's metrics are recorded just after its final response
        seen = server_metrics.record(before, server_metrics.scrape(cfg.metrics_urls))
    return {
        "label": name,
        "mode": mode,
        "load": asdict(load),
        "started_at": t0,
        "summary": summary.to_dict(),
        "overhead": overhead(summary, cfg.known_ttft_s, cfg.known_itl_s),
        "server_metrics": seen,  # warm-up requests included: the server cannot tell them apart
        "cpu": cpu,  # the measured requests only
        "records": [r.to_dict() for r in sorted(records, key=lambda r: r.index)],
    }


def run_bench(cfg: BenchConfig, items: list[Item], tokenizer, out_dir: Path, config_extra: dict,
              plots: bool = True, console: Console | None = None, fmt: str = "table") -> dict:
    """fmt json: the summary goes to stdout as JSON, and the progress and notes to stderr."""
    con = console or Console(stderr=fmt == "json")
    out_dir.mkdir(parents=True, exist_ok=True)
    points = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, transient=False) as progress:
        for load in cfg.points:
            for mode in cfg.modes:  # modes side by side at each load point
                points.append(run_point(cfg, load, items, tokenizer, progress, mode))
    config = {"url": cfg.url, "model": cfg.model, "modes": list(cfg.modes), "engine_model": cfg.engine_model,
              "openai_url": cfg.openai_url, "template": cfg.template, "slo": asdict(cfg.slo),
              "known_ttft_s": cfg.known_ttft_s, "known_itl_s": cfg.known_itl_s,
              "metrics_urls": list(cfg.metrics_urls), **config_extra}
    files = [report.write_json(out_dir / "results.json", config, points), report.write_csv(out_dir / "requests.csv", points)]
    if plots:
        try:
            files += report.plot(out_dir, points, config)
        except ImportError as e:
            con.print(f"no plots: {e} (pip install 'ziya-trt[plots]')")
    if fmt == "json":
        report.print_json(points, files)
    else:
        report.print_table(points, con)
    report.print_overhead(points, con)
    server_metrics.print_digests(points, con)
    process_cpu.print_table(points, con)
    con.print("wrote " + ", ".join(str(f) for f in files))
    return {"points": points, "files": files}
