"""``ziya-trt eval``'s outputs: results.json, a terminal table, and a plot (matplotlib, the ``plots`` extra;
skipped with a message saying how to get it when it is missing)."""

from __future__ import annotations

import datetime
import json
import sys
from importlib import metadata
from pathlib import Path

from rich.markup import escape
from rich.table import Table

PLOTS_MISSING = "no plot: matplotlib is not installed (pip install 'ziya-trt[plots]')"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("ziya-trt", "torch", "transformers", "tokenizers", "tensorrt-llm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    return path


def say(con, text: str) -> None:
    """A line of figures, URLs and item names: printed as it is, never read as rich markup."""
    con.print(text, markup=False, highlight=False)


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _figure(width: float, height: float, ncols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


# --- agree -----------------------------------------------------------------------------------------------------
def print_agree(doc: dict, con, rows: list[dict]) -> None:
    s = doc["summary"]
    t = Table("prompt", "kind", "in tok", "match", "first divergence", "max |Δ log p|",
              title=f"agreement with transformers ({doc['options']['ref_dtype']}), first {s['max_tokens']} tokens")
    for r in rows:
        if "skipped" in r:
            t.add_row(escape(r["id"]), escape(r["kind"]), str(r["prompt_tokens"]), "skipped", escape(r["skipped"][:40]), "")
            continue
        d = max((abs(x) for x in r["logprob_diffs"]), default=None)
        t.add_row(escape(r["id"]), escape(r["kind"]), str(r["prompt_tokens"]), "yes" if r["match"] else "no",
                  "-" if r["first_divergence"] is None else str(r["first_divergence"]), _fmt(d, ".2e"))
    con.print(t)
    lp = s["logprob_diff"]["abs"]
    say(con, f"exact match of the first {s['max_tokens']} tokens: {_fmt(s['exact_match_rate'])} "
              f"({s['compared']} prompts compared, {len(s['skipped'])} skipped); first token: "
              f"{_fmt(s['first_token_match_rate'])}")
    say(con, f"|Δ log p| over {lp['count']} matched tokens: mean {_fmt(lp['mean'], '.2e')}, p50 {_fmt(lp['p50'], '.2e')}"
              f", p95 {_fmt(lp['p95'], '.2e')}, max {_fmt(lp['max'], '.2e')}; signed mean "
              f"{_fmt(s['logprob_diff']['signed_mean'], '+.2e')}")
    say(con, "PASS" if doc["pass"] else "FAIL: " + "; ".join(doc["misses"]))


def plot_agree(out: Path, s: dict, con) -> list[Path]:
    try:
        fig, (left, right) = _figure(10, 3.8, 2)
    except ImportError:
        say(con, PLOTS_MISSING)
        return []
    k = list(range(1, len(s["identical_through"]) + 1))
    left.step(k, s["identical_through"], where="post", color="tab:blue")
    left.set(xlabel="token position", ylabel="prompts identical so far", ylim=(0, 1.02),
             title=f"served vs transformers: exact match {_fmt(s['exact_match_rate'], '.2f')}")
    left.grid(alpha=0.3)
    # the per-token differences are in results.json's items only as a summary; the plot reads them from items.jsonl
    diffs = [abs(d) for r in _rows(out) if "skipped" not in r for d in r["logprob_diffs"]]
    diffs = [d for d in diffs if d > 0]
    if diffs:
        import numpy as np

        lo, hi = max(min(diffs), 1e-9), max(max(diffs), 1e-8)
        right.hist(diffs, bins=np.logspace(np.log10(lo), np.log10(hi * 1.01), 30), color="tab:orange")
        right.set_xscale("log")
    right.set(xlabel="|Δ log p| per matched token", ylabel="tokens", title="log-probability difference")
    path = out / "agree.png"
    fig.savefig(path, dpi=110)
    return [path]


def _rows(out: Path) -> list[dict]:
    from .store import ITEMS_FILE

    p = out / ITEMS_FILE
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


# --- bench -----------------------------------------------------------------------------------------------------
def print_bench(doc: dict, con) -> None:
    s = doc["summary"]
    engines = s["engines"]
    t = Table("task", *[f"{lab} accuracy" for lab in engines], *(["B - A [95% CI]", "A only", "B only"]
                                                                   if "paired" in s else []),
              title="multiple choice through the served API (greedy, first letter A-D)")
    tasks = list(doc["options"]["tasks"])
    for task in tasks + ["all"]:
        accs = [e["tasks"][task] if task != "all" else e for e in engines.values()]
        cells = [f"{_fmt(a['accuracy'])} ({a['correct']}/{a['items']})" for a in accs]
        if "paired" in s:
            p = s["paired"] if task == "all" else s["paired_by_task"][task]
            cells += [f"{p['diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]" if p["n"] else "-",
                      str(p["a_only"]), str(p["b_only"])]
        t.add_row(task, *cells)
    con.print(t)
    for lab, e in engines.items():
        say(con, f"{lab}: {e['url']}  ({e['unparsed']} answers without a letter A-D, {e['skipped']} refused)")
    if "paired" in s:
        p = s["paired"]
        say(con, f"paired over {p['n']} items: {len(s['disagreements'])} answered differently, McNemar exact "
                  f"p = {p['mcnemar_p']:.3g}; at this discordance ({p['discordance']:.3f}) a ±0.01 interval needs "
                  f"about {p['items_for_1_point'] or '-'} items")
        for d in s["disagreements"][:10]:
            say(con, f"  {d['item']}: gold {d['gold']}, A {d['A']}, B {d['B']}")
        if len(s["disagreements"]) > 10:
            say(con, f"  ... {len(s['disagreements']) - 10} more in results.json")
    if doc["options"].get("max_drop") is not None:
        say(con, "PASS" if doc["pass"] else "FAIL: " + "; ".join(doc["misses"]))


def plot_bench(out: Path, s: dict, tasks, con) -> list[Path]:
    paired = "paired" in s
    try:
        fig, axes = _figure(11 if paired else 6, 3.8, 2 if paired else 1)
    except ImportError:
        say(con, PLOTS_MISSING)
        return []
    names = list(tasks) + ["all"]
    engines = s["engines"]
    width = 0.8 / len(engines)
    ax = axes[0]
    for i, (lab, e) in enumerate(engines.items()):
        accs = [(e["tasks"][t] if t != "all" else e)["accuracy"] or 0.0 for t in names]
        ax.bar([j + i * width for j in range(len(names))], accs, width, label=f"{lab} {e['url']}")
    ax.set_xticks([j + width * (len(engines) - 1) / 2 for j in range(len(names))], names)
    ax.set(ylabel="accuracy", ylim=(0, 1), title="accuracy (greedy, first letter)")
    ax.legend(fontsize=7)
    if paired:
        ax = axes[1]
        ps = [s["paired_by_task"][t] if t != "all" else s["paired"] for t in names]
        for j, p in enumerate(ps):
            if p["n"]:
                ax.errorbar([p["diff"]], [j], xerr=[[p["diff"] - p["ci_low"]], [p["ci_high"] - p["diff"]]], fmt="o",
                            color="tab:red" if p["ci_low"] > 0 or p["ci_high"] < 0 else "tab:blue", capsize=4)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="B - A accuracy (95% paired bootstrap interval)", title="paired difference")
    path = out / "bench.png"
    fig.savefig(path, dpi=110)
    return [path]
