"""Results as JSON (every record, the summary, the config, versions, machine), CSV, a terminal
table and PNG plots; and the comparison of two runs."""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table


def software_versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("ziya-trt", "tritonclient", "nvidia-pytriton", "torch", "transformers", "tensorrt-llm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "memory_bytes": mem,
            "processor": platform.processor() or platform.machine()}


def write_json(path: Path, config: dict, points: list[dict]) -> Path:
    doc = {"format": 1, "config": config, "versions": software_versions(), "machine": machine(), "points": points}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    return path


CSV_FIELDS = ["point", "index", "warmup", "t_send", "ttft", "itl", "e2e", "input_tokens", "output_tokens",
              "server_output_tokens", "finish_reason", "error_type", "error"]


def write_csv(path: Path, points: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for p in points:
            for r in p["records"]:
                w.writerow({**r, "point": p["label"]})
    return path


def _ms(stat: dict | None, key: str) -> str:
    return "-" if not stat else f"{stat[key] * 1000:.1f}"


def print_table(points: list[dict], con: Console | None = None) -> None:
    con = con or Console()
    t = Table("point", "ok/sent", "err", "out tok/s", "req/s", "TTFT p50/p99 ms", "ITL p50/p99 ms",
              "E2E p50/p99 ms", "goodput", title="benchmark summary")
    for p in points:
        s = p["summary"]
        t.add_row(
            p["label"], f"{s['completed']}/{s['requests']}", str(s["errors"]), f"{s['output_token_throughput']:.1f}",
            f"{s['request_throughput']:.2f}", f"{_ms(s['ttft'], 'p50')}/{_ms(s['ttft'], 'p99')}",
            f"{_ms(s['itl'], 'p50')}/{_ms(s['itl'], 'p99')}", f"{_ms(s['e2e'], 'p50')}/{_ms(s['e2e'], 'p99')}",
            "-" if s["goodput"] is None else f"{s['goodput']:.2f}",
        )
    con.print(t)


def plot(out_dir: Path, points: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    ok = [p for p in points if p["summary"]["ttft"]]
    if not ok:
        return files
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    thr = [p["summary"]["output_token_throughput"] for p in ok]
    for i, (metric, name) in enumerate((("ttft", "TTFT"), ("itl", "ITL"))):
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ys = [(p["summary"][metric] or {}).get(q, float("nan")) * 1000 for p in ok]
            ax[i].plot(thr, ys, style, label=f"{name} {q}")
        for p, x in zip(ok, thr):
            ax[i].annotate(p["label"], (x, (p["summary"][metric] or {}).get("p50", 0) * 1000), fontsize=7)
        ax[i].set_xlabel("output tokens/s")
        ax[i].set_ylabel(f"{name} (ms)")
        ax[i].grid(alpha=0.3)
        ax[i].legend()
    fig.suptitle("throughput vs latency across the sweep")
    fig.tight_layout()
    files.append(out_dir / "throughput_latency.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for p in ok:
        recs = [r for r in p["records"] if not r["warmup"] and r["error"] is None]
        ax[0].hist([r["ttft"] * 1000 for r in recs if r["ttft"] is not None], bins=30, alpha=0.5, label=p["label"])
        ax[1].hist([r["itl"] * 1000 for r in recs if r["itl"] is not None], bins=30, alpha=0.5, label=p["label"])
    for a, name in zip(ax, ("TTFT (ms)", "ITL (ms)")):
        a.set_xlabel(name)
        a.set_ylabel("requests")
        a.legend(fontsize=7)
    fig.suptitle("latency distributions")
    fig.tight_layout()
    files.append(out_dir / "latency_distributions.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


# --- comparison ---------------------------------------------------------------------------------

# metric path, higher is better?
COMPARED = [
    ("output_token_throughput", True),
    ("request_throughput", True),
    ("ttft.p50", False),
    ("ttft.p99", False),
    ("itl.p50", False),
    ("itl.p99", False),
    ("e2e.p99", False),
    ("errors", False),
]


def _get(summary: dict, path: str):
    v = summary
    for k in path.split("."):
        v = None if v is None else v.get(k)
    return v


def compare(a: dict, b: dict, threshold: float = 0.05) -> list[dict]:
    """Per matching sweep point and metric: values, relative change, and whether B regressed."""
    rows = []
    pa = {p["label"]: p["summary"] for p in a["points"]}
    for p in b["points"]:
        if p["label"] not in pa:
            continue
        for path, higher_better in COMPARED:
            va, vb = _get(pa[p["label"]], path), _get(p["summary"], path)
            if va is None or vb is None:
                continue
            change = (vb - va) / va if va else (0.0 if vb == va else float("inf"))
            worse = change < -threshold if higher_better else change > threshold
            if path == "errors":
                worse = vb > va
            rows.append({"point": p["label"], "metric": path, "a": va, "b": vb, "change": change, "regression": worse})
    return rows


def print_compare(rows: list[dict], con: Console | None = None) -> None:
    con = con or Console()
    t = Table("point", "metric", "A", "B", "change", "", title="B vs A")
    for r in rows:
        fmt = (lambda v: f"{v * 1000:.2f} ms") if "." in r["metric"] else (lambda v: f"{v:.2f}")
        t.add_row(r["point"], r["metric"], fmt(r["a"]), fmt(r["b"]), f"{r['change'] * 100:+.1f}%",
                  "[red]REGRESSION[/]" if r["regression"] else "")
    con.print(t)
