"""A benchmark run: a sweep of load points against one endpoint, with outputs written to a folder."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ziya_trt.client import AsyncZiyaClient

from . import report
from .load import LoadConfig, run_load
from .metrics import Slo, calculate_metrics
from .workload import Item


@dataclass
class BenchConfig:
    url: str
    model: str = "ziya"
    mode: str = "text"  # or "token": the client tokenises and calls the engine model directly
    template: str = "ziya"
    points: list[LoadConfig] = field(default_factory=list)
    slo: Slo = Slo()
    known_ttft_s: float | None = None  # the synthetic engine's configured figures, when known
    known_itl_s: float | None = None
    timeout_s: float = 120.0


def label(cfg: LoadConfig) -> str:
    if cfg.open_loop:
        return f"rate={cfg.rate:g}" + (f",max{cfg.concurrency}" if cfg.concurrency else "")
    return f"c={cfg.concurrency}"


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


def run_point(cfg: BenchConfig, load: LoadConfig, items: list[Item], tokenizer, progress=None) -> dict:
    count = (lambda text: tokenizer.count(text, add_bos=False)) if tokenizer is not None else None

    async def go():
        needs_tok = cfg.template == "chat_template" or cfg.mode == "token"
        client = AsyncZiyaClient(cfg.url, model=cfg.model, mode=cfg.mode, template=cfg.template,
                                 timeout_s=cfg.timeout_s, tokenizer=tokenizer if needs_tok else None)
        task = progress.add_task(label(load), total=load.num_requests) if progress else None
        done = lambda r: progress.advance(task) if progress else None  # noqa: E731
        try:
            return await run_load(client, items, load, count, on_done=done)
        finally:
            await client.close()

    t0 = time.time()
    records = asyncio.run(go())
    summary = calculate_metrics(records, cfg.slo)
    return {
        "label": label(load),
        "load": asdict(load),
        "started_at": t0,
        "summary": summary.to_dict(),
        "overhead": overhead(summary, cfg.known_ttft_s, cfg.known_itl_s),
        "records": [r.to_dict() for r in sorted(records, key=lambda r: r.index)],
    }


def run_bench(cfg: BenchConfig, items: list[Item], tokenizer, out_dir: Path, config_extra: dict,
              plots: bool = True, console: Console | None = None) -> dict:
    con = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    points = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, transient=False) as progress:
        for load in cfg.points:
            points.append(run_point(cfg, load, items, tokenizer, progress))
    config = {"url": cfg.url, "model": cfg.model, "template": cfg.template, "slo": asdict(cfg.slo),
              "known_ttft_s": cfg.known_ttft_s, "known_itl_s": cfg.known_itl_s, **config_extra}
    files = [report.write_json(out_dir / "results.json", config, points), report.write_csv(out_dir / "requests.csv", points)]
    if plots:
        files += report.plot(out_dir, points)
    report.print_table(points, con)
    for p in points:
        if p["overhead"]:
            o = p["overhead"]
            con.print(f"{p['label']}: stack+client add TTFT p50 {o['added_ttft_p50_ms']:+.2f} ms"
                      + (f", ITL p50 {o['added_itl_p50_ms']:+.2f} ms, p99 {o['added_itl_p99_ms']:+.2f} ms"
                         if "added_itl_p50_ms" in o else ""))
    con.print("wrote " + ", ".join(str(f) for f in files))
    return {"points": points, "files": files}
