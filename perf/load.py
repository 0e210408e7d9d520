"""The load generator: closed loop (fixed concurrency) or open loop (Poisson/gamma arrivals),
with warm-up, a fixed seed, and hard bounds on request count and wall time."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Callable

from ziya_trt.errors import ZiyaError

from .metrics import RequestRecord
from .workload import Item


@dataclass(frozen=True)
class LoadConfig:
    concurrency: int | None = 1  # closed loop: requests in flight; open loop: optional cap
    rate: float | None = None  # open loop: requests/s (None = closed loop)
    burstiness: float = 1.0  # gamma shape; 1.0 = Poisson
    num_requests: int = 100
    warmup: int = 2
    seed: int = 0
    max_duration_s: float = 600.0
    ignore_eos: bool = True  # force exactly max_tokens (min_tokens = max_tokens)
    greedy: bool = True

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


def arrival_gaps(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Inter-arrival times: gamma(shape=burstiness, scale=1/(rate*burstiness)); mean 1/rate."""
    rng = random.Random(seed)
    return [rng.gammavariate(burstiness, 1.0 / (rate * burstiness)) for _ in range(n)]


async def one_request(client, item: Item, index: int, cfg: LoadConfig, t0: float,
                      warmup: bool = False) -> RequestRecord:
    rec = RequestRecord(index=index, t_send=time.perf_counter() - t0, warmup=warmup,
                        input_tokens=item.input_tokens or 0)
    # warm-up requests have negative indices; every request gets its own non-negative seed
    kw = dict(max_new_tokens=item.max_tokens, do_sample=not cfg.greedy, seed=cfg.seed * 1_000_003 + index + 1_000)
    if cfg.ignore_eos:
        kw["min_tokens"] = item.max_tokens
    parts: list[str] = []
    stream = None
    try:
        stream = (client.stream_chat(item.prompt, **kw) if not item.raw
                  else client.stream_chat_raw(item.prompt, **kw))
        async for delta in stream:
            now = time.perf_counter() - t0
            if rec.t_first is None:
                rec.t_first = now
            rec.chunk_times.append(now)
            parts.append(delta)
        rec.t_last = rec.chunk_times[-1] if rec.chunk_times else None
        res = stream.result
        rec.finish_reason = res.finish_reason.value if res and res.finish_reason else None
        rec.server_output_tokens = res.completion_tokens if res else None
        if not rec.input_tokens and res and res.prompt_tokens:
            rec.input_tokens = res.prompt_tokens
    except ZiyaError as e:
        rec.error, rec.error_type = str(e)[:500], type(e).__name__
    except Exception as e:  # anything else (a broken event, a bug): still a record, counted by its type
        rec.error, rec.error_type = f"{type(e).__name__}: {e}"[:500], type(e).__name__
    except asyncio.CancelledError:
        rec.error, rec.error_type = "cancelled at the run's time bound", "Cancelled"
        if stream is not None:
            await stream.cancel()
    rec.text = "".join(parts)
    if rec.error is None:
        rec.output_tokens = rec.server_output_tokens or 0  # replaced by the tokenizer's count after the run
        if rec.t_first is None:
            rec.error, rec.error_type = "no output", "Empty"
    return rec


async def run_load(client, items: list[Item], cfg: LoadConfig, count_tokens: Callable | None = None,
                   on_done: Callable[[RequestRecord], None] | None = None,
                   on_phase: Callable[[str], None] | None = None) -> list[RequestRecord]:
    """``on_phase("measured")`` after the warm-up, ``on_phase("done")`` when the last measured request ends."""
    t0 = time.perf_counter()
    phase = on_phase or (lambda _name: None)
    records: list[RequestRecord] = []
    n_warm = min(cfg.warmup, len(items))
    if n_warm:
        warm = await asyncio.gather(*[one_request(client, items[i], -1 - i, cfg, t0, True)
                                      for i in range(n_warm)])
        records.extend(warm)
    phase("measured")
    measured = [items[i % len(items)] for i in range(cfg.num_requests)]
    deadline = time.perf_counter() + cfg.max_duration_s

    async def tracked(item, idx):
        r = await one_request(client, item, idx, cfg, t0)
        records.append(r)
        if on_done:
            on_done(r)

    if cfg.open_loop:
        sem = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None
        tasks = []
        gaps = arrival_gaps(len(measured), cfg.rate, cfg.burstiness, cfg.seed)

        async def limited(item, idx):
            if sem is None:
                return await tracked(item, idx)
            async with sem:
                return await tracked(item, idx)

        for idx, (item, gap) in enumerate(zip(measured, gaps)):
            await asyncio.sleep(gap)
            if time.perf_counter() > deadline:
                break
            tasks.append(asyncio.create_task(limited(item, idx)))
        await _bounded(tasks, deadline)
    else:
        queue: asyncio.Queue = asyncio.Queue()
        for idx, item in enumerate(measured):
            queue.put_nowait((idx, item))

        async def worker():
            while time.perf_counter() < deadline:
                try:
                    idx, item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await tracked(item, idx)

        await _bounded([asyncio.create_task(worker()) for _ in range(cfg.concurrency or 1)], deadline)
    phase("done")
    if count_tokens:  # after the run, so tokenising never competes with the load for the CPU
        for r in records:
            if r.error is None:
                r.output_tokens = count_tokens(r.text)
    return records


async def _bounded(tasks: list[asyncio.Task], deadline: float) -> None:
    """Wait for the tasks, cancelling whatever is still running at the time bound."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()) + 30.0)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
