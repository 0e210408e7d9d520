"""Multi-turn chat: what KV-cache reuse buys when every request re-sends the whole conversation.

Each conversation has N turns; turn t sends the history (earlier questions and the model's own answers)
plus a new question, and TTFT is measured per turn. Two arms run against the same server in one run:

- ``reuse``: the conversation's first message starts with a tag of its own, the same every turn, so the
  engine can reuse the history's KV blocks (and no other conversation's, nor an earlier run's);
- ``no_reuse``: every request starts with a new tag, so no block can match: the engine computes the
  whole prompt, as it would with reuse off (the same prompt lengths, the same server, the same load).

Arms alternate per batch of conversations, so drift on a shared machine falls on both. The server's
reported ``cached_tokens`` says whether reuse really happened (0 throughout the ``no_reuse`` arm).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ziya_trt.errors import ZiyaError

from . import report
from .workload import _pool, exact_prompt

ARMS = ("reuse", "no_reuse")


@dataclass(frozen=True)
class MultiTurnConfig:
    conversations: int = 4
    turns: int = 8
    question_tokens: int = 150  # each new question
    answer_tokens: int = 40  # each answer (min_tokens = max_tokens: exact)
    concurrency: int = 1  # conversations in flight
    seed: int = 0

    def __post_init__(self):
        if min(self.conversations, self.turns, self.question_tokens, self.answer_tokens, self.concurrency) < 1:
            raise ValueError("conversations, turns, question tokens, answer tokens and concurrency must be >= 1")


@dataclass
class TurnRecord:
    arm: str
    conversation: int
    turn: int  # 1-based
    t_send: float
    ttft: float | None = None
    e2e: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    turns_dropped: int = 0
    error: str | None = None
    error_type: str | None = None


def questions(tok, cfg: MultiTurnConfig) -> list[list[str]]:
    """``turns`` questions for each conversation, of about ``question_tokens`` each."""
    rng, pool = random.Random(cfg.seed), _pool(cfg.seed)
    out = []
    for _ in range(cfg.conversations):
        conv = []
        for _ in range(cfg.turns):
            if tok is not None:
                conv.append(exact_prompt(tok, cfg.question_tokens, rng, pool))
            else:  # no tokenizer: about 3 characters a token
                start = rng.randrange(0, len(pool) // 2)
                conv.append(pool[start : start + 3 * cfg.question_tokens])
        out.append(conv)
    return out


def _tag() -> str:
    return f"[{uuid.uuid4().hex[:12]}] "


async def conversation(client, arm: str, index: int, qs: list[str], cfg: MultiTurnConfig, t0: float,
                       on_turn=None) -> list[TurnRecord]:
    """One conversation's turns, one after another; a failed turn ends the conversation (its history
    would be wrong), and is recorded."""
    tag, history, records = _tag(), [], []
    for t, q in enumerate(qs, 1):
        if arm == "no_reuse":
            tag = _tag()  # a new first block every request
        messages = [dict(m) for m in history] + [{"role": "user", "content": q}]
        messages[0]["content"] = tag + messages[0]["content"]
        rec = TurnRecord(arm, index, t, time.perf_counter() - t0)
        records.append(rec)
        parts = []
        try:
            stream = client.stream_chat(messages, max_new_tokens=cfg.answer_tokens, min_tokens=cfg.answer_tokens,
                                        do_sample=False)
            async for delta in stream:
                if rec.ttft is None:
                    rec.ttft = time.perf_counter() - t0 - rec.t_send
                parts.append(delta)
            rec.e2e = time.perf_counter() - t0 - rec.t_send
            res = stream.result
            rec.prompt_tokens, rec.completion_tokens = res.prompt_tokens, res.completion_tokens
            rec.cached_tokens, rec.turns_dropped = res.cached_tokens, getattr(res, "turns_dropped", 0)
        except ZiyaError as e:
            rec.error, rec.error_type = str(e)[:500], type(e).__name__
        except Exception as e:  # noqa: BLE001 - still a record
            rec.error, rec.error_type = f"{type(e).__name__}: {e}"[:500], type(e).__name__
        if on_turn:
            on_turn(rec)
        if rec.error is not None:
            break
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": "".join(parts)}]
    return records


async def run_multiturn(make_client, cfg: MultiTurnConfig, qs: list[list[str]], on_turn=None) -> list[TurnRecord]:
    """Batches of ``concurrency`` conversations, each batch in both arms in turn (which goes first
    alternates)."""
    client = make_client()
    t0 = time.perf_counter()
    records: list[TurnRecord] = []
    try:
        await conversation(client, "warmup", -1, qs[0][:1], cfg, t0)  # first-request costs out of the way
        for b, start in enumerate(range(0, len(qs), cfg.concurrency)):
            batch = list(enumerate(qs))[start : start + cfg.concurrency]
            for arm in ARMS if b % 2 == 0 else ARMS[::-1]:
                done = await asyncio.gather(*[conversation(client, arm, i, q, cfg, t0, on_turn) for i, q in batch])
                records += [r for conv in done for r in conv]
    finally:
        await client.close()
    return records


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summarize(records: list[TurnRecord], turns: int) -> list[dict]:
    """Per turn: prompt and cached tokens, TTFT of each arm (p50, min, max), and reuse's TTFT ratio."""
    rows = []
    for t in range(1, turns + 1):
        row: dict = {"turn": t}
        for arm in ARMS:
            ok = [r for r in records if r.arm == arm and r.turn == t and r.error is None and r.ttft is not None]
            row[arm] = None if not ok else {
                "n": len(ok),
                "prompt_tokens": statistics.fmean(r.prompt_tokens or 0 for r in ok),
                "cached_tokens": statistics.fmean(r.cached_tokens or 0 for r in ok),
                "ttft_p50_ms": _q([r.ttft for r in ok], 0.5) * 1000,
                "ttft_min_ms": min(r.ttft for r in ok) * 1000,
                "ttft_max_ms": max(r.ttft for r in ok) * 1000,
                "errors": sum(1 for r in records if r.arm == arm and r.turn == t and r.error is not None),
            }
        a, b = row["reuse"], row["no_reuse"]
        row["ttft_ratio"] = a["ttft_p50_ms"] / b["ttft_p50_ms"] if a and b and b["ttft_p50_ms"] > 0 else None
        rows.append(row)
    return rows


def print_summary(rows: list[dict], records: list[TurnRecord], con=None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = con or Console()
    t = Table(title="multi-turn TTFT: reuse vs no reuse, ms (p50, min-max in brackets)")
    for col in ("turn", "prompt tok", "cached tok", "TTFT reuse", "TTFT no reuse", "ratio"):
        t.add_column(col, justify="right")
    for r in rows:
        a, b = r["reuse"], r["no_reuse"]

        def ttft(x):
            return "-" if x is None else f"{x['ttft_p50_ms']:.0f} \\[{x['ttft_min_ms']:.0f}-{x['ttft_max_ms']:.0f}]"

        t.add_row(str(r["turn"]), f"{(a or b or {}).get('prompt_tokens', 0):.0f}",
                  "-" if a is None else f"{a['cached_tokens']:.0f}", ttft(a), ttft(b),
                  "-" if r["ttft_ratio"] is None else f"{r['ttft_ratio']:.2f}")
    report.print_wide(t, con)
    bad = [r for r in records if r.error is not None]
    if bad:
        con.print(f"[red]{len(bad)} failed turn(s)[/]: " + "; ".join(sorted({r.error_type for r in bad})))
    leaked = sum(r.cached_tokens or 0 for r in records if r.arm == "no_reuse")
    if leaked:
        con.print(f"[yellow]the no_reuse arm got {leaked} cached tokens: its comparison is not clean[/]")


def plot(out_dir: Path, rows: list[dict], config: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    turns = [r["turn"] for r in rows]
    for arm, colour in zip(ARMS, ("tab:green", "tab:red")):
        pts = [(r["turn"], r[arm]) for r in rows if r[arm]]
        xs = [t for t, _ in pts]
        ax.plot(xs, [a["ttft_p50_ms"] for _, a in pts], marker="o", color=colour, label=f"{arm} (p50)")
        ax.fill_between(xs, [a["ttft_min_ms"] for _, a in pts], [a["ttft_max_ms"] for _, a in pts],
                        color=colour, alpha=0.15, label=f"{arm} (min-max)")
    ax.set(xlabel="turn", ylabel="TTFT (ms)", title="time to first token per turn", xticks=turns)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    a = [(r["turn"], r["reuse"]) for r in rows if r["reuse"]]
    ax2.bar([t for t, _ in a], [x["prompt_tokens"] for _, x in a], color="0.8", label="prompt tokens")
    ax2.bar([t for t, _ in a], [x["cached_tokens"] for _, x in a], color="tab:green", label="of which cached (reuse)")
    ax2.set(xlabel="turn", ylabel="tokens", title="prompt per turn", xticks=turns)
    ax2.legend(fontsize=8)
    fig.suptitle(f"multi-turn chat ({config.get('serve') or config.get('model')}), {config.get('conversations')} "
                 f"conversations x {config.get('turns')} turns, "
                 f"{config.get('concurrency')} at a time; {config.get('url', '')}", fontsize=9)
    path = out_dir / "multiturn_ttft.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_and_report(make_client, cfg: MultiTurnConfig, qs: list[list[str]], out_dir: Path, config_extra: dict,
                   plots: bool = True, fmt: str = "table", console=None) -> dict:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    con = console or Console(stderr=fmt == "json")
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 2 * cfg.conversations * cfg.turns
    with Progress(TextColumn("multiturn"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=con) as p:
        task = p.add_task("turns", total=total)
        records = asyncio.run(run_multiturn(make_client, cfg, qs, on_turn=lambda r: p.advance(task)))
    rows = summarize(records, cfg.turns)
    config = asdict(cfg) | config_extra
    doc = {"kind": "multiturn", "config": config, "versions": report.software_versions(),
           "machine": report.machine(), "turns": rows, "records": [asdict(r) for r in records]}
    files = [out_dir / "results.json"]
    files[0].write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    if plots:
        try:
            files.append(plot(out_dir, rows, config))
        except ImportError as e:
            con.print(f"no plots: {e} (pip install 'ziya-trt[plots]')")
    if fmt == "json":
        print(json.dumps({"turns": rows, "files": [str(f) for f in files]}, indent=1))
    else:
        print_summary(rows, records, con)
    con.print("wrote " + ", ".join(str(f) for f in files))
    return {"turns": rows, "records": records, "files": files}


__all__ = ["ARMS", "MultiTurnConfig", "TurnRecord", "questions", "run_multiturn", "summarize", "run_and_report"]
