"""Results as JSON (every record, the summary, the config, versions, machine), CSV, a terminal table
or a JSON summary, and PNG plots; and the comparison of two runs."""

from __future__ import annotations

import csv
import itertools
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.measure import Measurement
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


def print_wide(table: Table, con: Console | None = None) -> None:
    """At a terminal's width (a narrow cell folds, never loses digits); piped or to a file, at the table's own."""
    con = con or Console()
    for c in table.columns:
        c.overflow = "fold"
    if not con.is_terminal:
        width = Measurement.get(con, con.options.update_width(10_000), table).maximum
        con = Console(file=con.file, width=max(width, con.width), no_color=con.no_color)
    con.print(table)


def print_table(points: list[dict], con: Console | None = None) -> None:
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
    print_wide(t, con)


def print_overhead(points: list[dict], con: Console | None = None) -> None:
    con = con or Console()
    for p in points:
        if o := p.get("overhead"):
            con.print(f"{p['label']}: stack+client add TTFT p50 {o['added_ttft_p50_ms']:+.2f} ms"
                      + (f", ITL p50 {o['added_itl_p50_ms']:+.2f} ms, p99 {o['added_itl_p99_ms']:+.2f} ms"
                         if "added_itl_p50_ms" in o else ""))


def summary_doc(points: list[dict], files: list | tuple = ()) -> dict:
    """What `bench --format json` prints: each point without its records, and the files written."""
    keys = ("label", "mode", "load", "summary", "overhead")
    return {"points": [{k: p.get(k) for k in keys} for p in points], "files": [str(f) for f in files]}


def print_json(points: list[dict], files: list | tuple = (), file=None) -> None:
    print(json.dumps(summary_doc(points, files), indent=1, ensure_ascii=False, default=str), file=file or sys.stdout)


# --- plots --------------------------------------------------------------------------------------
# Each figure is built by a function that returns it (the tests look inside); plot() saves them. Colour is
# the mode, so the paths compare at a glance. Value axes start at 0, so a 0.5 ms spread looks like one; an
# ECDF's latency axis is zoomed in only where the values would otherwise be one step, and says so.

# colour, colour map (ECDF shades), marker and its size: a bigger marker is drawn below, so a mode hidden
# under another that measured the same still shows as a ring
MODE_STYLES = {"text": ("tab:blue", "Blues", "o", 9), "token": ("tab:orange", "Oranges", "D", 6),
               "openai": ("tab:green", "Greens", "^", 6)}
OTHER_STYLE = ("tab:purple", "Purples", "v", 6)
REF = {"color": "0.3", "ls": ":", "lw": 1.3}  # the synthetic engine's configured figures
OFFERED = {"color": "0.55", "ls": "-.", "lw": 1.2}
# where a point's label may go (points from the marker), nearest first
LABEL_OFFSETS = [(round(dx * k), round(dy * k)) for k in (1, 1.9, 2.8)
                 for dx, dy in ((6, 7), (6, -7), (-6, 7), (-6, -7), (10, 0), (-10, 0), (0, 12), (0, -12))]


def _mode(p: dict) -> str:
    return p.get("mode") or "text"


def _load_label(p: dict) -> str:  # 'openai c=64' -> 'c=64': the colour says the mode
    return p["label"].removeprefix(_mode(p) + " ")


def _x(p: dict) -> float:
    """The load: offered requests/s in an open loop, requests in flight in a closed one."""
    load = p["load"]
    return load["rate"] if load.get("rate") is not None else load["concurrency"]


def _series(points: list[dict]) -> dict[str, list[dict]]:
    """The points by mode (in the order the modes ran), each by load."""
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(_mode(p), []).append(p)
    return {m: sorted(ps, key=_x) for m, ps in out.items()}


def _stat(p: dict, metric: str, q: str, scale: float = 1000.0) -> float:
    st = p["summary"].get(metric)
    return st[q] * scale if st else float("nan")


def _colour(mode: str) -> str:
    return MODE_STYLES.get(mode, OTHER_STYLE)[0]


def _lines(ax, mode: str, xs: list, p50s: list, p99s: list | None = None) -> None:
    """A mode's p50 (solid, filled markers) and p99 (dashed, hollow markers)."""
    c, _, marker, size = MODE_STYLES.get(mode, OTHER_STYLE)
    z = 3 - size / 10
    ax.plot(xs, p50s, ls="-", marker=marker, color=c, ms=size, lw=1.6, zorder=z)
    if p99s is not None:
        ax.plot(xs, p99s, ls="--", marker=marker, color=c, ms=size - 1, lw=1.3, mfc="white", alpha=0.8, zorder=z)


def _shades(mode: str, n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps[MODE_STYLES.get(mode, OTHER_STYLE)[1]]
    return [cmap(0.8)] if n == 1 else [cmap(0.45 + 0.5 * i / (n - 1)) for i in range(n)]


def known_lines(config: dict | None) -> dict[str, float]:
    """The synthetic engine's configured TTFT and ITL (ms), and the E2E they make at a forced OSL (s)."""
    c = config or {}
    out = {k: c[f"known_{k}_s"] * 1000 for k in ("ttft", "itl") if c.get(f"known_{k}_s") is not None}
    if len(out) == 2 and c.get("osl_forced") and c.get("dataset") == "synthetic" and c.get("osl"):
        out["e2e"] = c["known_ttft_s"] + (c["osl"] - 1) * c["known_itl_s"]
    return out


def _known_text(metric: str, value: float, config: dict) -> str:
    if metric == "e2e":
        return f"synthetic engine: E2E {value:.3g} s (TTFT + {config['osl'] - 1} × ITL)"
    return f"synthetic engine: {metric.upper()} {value:.3g} ms"


def run_details(config: dict | None, points: list[dict], machine_info: dict | None = None) -> str:
    """Engine, model, dataset, isl/osl, modes, load and CPUs: what a reader needs to trust the figure."""
    c, m = config or {}, machine_info or {}
    engine = f" (engine model {c['engine_model']})" if c.get("engine_model") else ""
    parts = [f"engine: {c['serve']} (served by the run)" if c.get("serve") else f"server: {c.get('url', '?')}{engine}",
             f"model: {c.get('model', '?')}"]
    ds = c.get("dataset", "?")
    parts.append(f"dataset: synthetic, isl {c.get('isl')} / osl {c.get('osl')} tokens" if ds == "synthetic"
                 else f"dataset: {ds}")
    modes = c.get("modes") or list(_series(points))
    parts.append(("modes: " if len(modes) > 1 else "mode: ") + ", ".join(modes))
    loads = [p["load"] for p in points]
    n = sorted({ld.get("num_requests") for ld in loads})
    loop = (f"open loop (burstiness {loads[0].get('burstiness', 1):g})"
            if loads and all(ld.get("rate") is not None for ld in loads) else "closed loop")
    parts.append(loop + (f", {n[0]} requests/point" if len(n) == 1 else ""))
    if m.get("cpu_count"):
        parts.append(f"{m['cpu_count']} CPUs")
    return " · ".join(parts)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _title(fig, what: str, config: dict | None, points: list[dict], machine_info: dict | None) -> None:
    import textwrap

    details = textwrap.fill(run_details(config, points, machine_info), int(fig.get_figwidth() * 15))
    fig.suptitle(f"{what}\n{details}", fontsize=10)


def _from_zero(ax, x: bool = False) -> None:
    """Axes from 0, with a little room above (and right of) the highest point for its label."""
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
    if x:
        ax.set_xlim(0, ax.get_xlim()[1] * 1.06)


def _ref_hline(ax, y: float, text: str) -> None:
    """A configured figure: a dotted line, named just below it (measurements sit above)."""
    ax.axhline(y, **REF)
    ax.annotate(text, (0.99, y), xycoords=ax.get_yaxis_transform(), xytext=(0, -3), textcoords="offset points",
                ha="right", va="top", fontsize=7, color=REF["color"])


def _legend(fig, series: dict, quantiles: str | None = "", refs: tuple = ()) -> None:
    """Below the panels: the modes, what solid and dashed mean, and the reference lines."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_colour(m), marker=MODE_STYLES.get(m, OTHER_STYLE)[2], label=m) for m in series]
    if quantiles is not None:
        handles += [Line2D([], [], color="0.3", marker="o", label=f"{quantiles}p50"),
                    Line2D([], [], color="0.3", marker="o", mfc="white", ls="--", label=f"{quantiles}p99")]
    handles += [Line2D([], [], **style, label=name) for style, name in refs]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)


def _obstacles(ax, renderer):
    """Boxes (display pixels, and what covering each costs) along every line, around every marker and text."""
    boxes = []
    for line in ax.get_lines():
        pts = line.get_transform().transform(line.get_xydata())
        pts = pts[np.isfinite(pts).all(axis=1)]
        for a, b in itertools.pairwise(pts):
            for t in np.linspace(0, 1, max(2, int(np.hypot(*(b - a)) / 4))):
                boxes.append([*(a + t * (b - a) - 2), *(a + t * (b - a) + 2), 1])
        if line.get_marker() not in (None, "", "None", " "):
            boxes += [[x - 5, y - 5, x + 5, y + 5, 10] for x, y in pts]
    for t in ax.texts:
        e = t.get_window_extent(renderer)
        boxes.append([e.x0, e.y0, e.x1, e.y1, 30])
    return np.array(boxes).reshape(-1, 5)


def _cost(box, o) -> float:
    return float(o[(o[:, 0] < box[2]) & (o[:, 2] > box[0]) & (o[:, 1] < box[3]) & (o[:, 3] > box[1]), 4].sum())


def _label_at(ax, xy, text: str, colour, offset, leader: bool = False):
    arrow = {"arrowstyle": "-", "color": colour, "lw": 0.6, "alpha": 0.7, "shrinkA": 0, "shrinkB": 4} if leader else None
    return ax.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=7, color=colour, va="center",
                       ha="left" if offset[0] > 0 else "right" if offset[0] < 0 else "center", arrowprops=arrow)


def _place_labels(ax, items: list[tuple[float, float, str, str]]) -> None:
    """Each (x, y, text, colour) by its marker, at the nearest offset where it covers no marker, line, text or
    the frame (failing that, where it covers least); a label set further off gets a thin leader line."""
    r = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(r)
    obstacles = _obstacles(ax, r)
    for x, y, text, colour in items:
        best = None
        for offset in LABEL_OFFSETS:
            t = _label_at(ax, (x, y), text, colour, offset)
            e = t.get_window_extent(r)
            t.remove()
            box = (e.x0 - 3, e.y0 - 2, e.x1 + 3, e.y1 + 2)
            inside = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
            cost = _cost(box, obstacles) + (0 if inside else 1000)
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        _label_at(ax, (x, y), text, colour, best[1], leader=LABEL_OFFSETS.index(best[1]) >= 8)
        obstacles = np.vstack([obstacles, [*best[2], 30]])


def _finish(fig, labels: dict | None = None):
    """Lay the figure out, label the points where they collide with nothing, and keep that layout."""
    fig.canvas.draw()
    for ax, items in (labels or {}).items():
        _place_labels(ax, items)
    fig.set_layout_engine("none")
    return fig


def _tl_panel(ax, series: dict, metric: str, name: str, known: dict, config: dict) -> list:
    for mode, ps in series.items():
        ps = [p for p in ps if p["summary"].get(metric)]
        _lines(ax, mode, [p["summary"]["output_token_throughput"] for p in ps], [_stat(p, metric, "p50") for p in ps],
               [_stat(p, metric, "p99") for p in ps])
    if metric in known:
        _ref_hline(ax, known[metric], _known_text(metric, known[metric], config))
    ax.set(xlabel="output tokens/s (all requests of the point)", ylabel=f"{name} (ms)", title=f"{name} p50 and p99")
    ax.grid(alpha=0.3)
    _from_zero(ax, x=True)
    return [(p["summary"]["output_token_throughput"], _stat(p, metric, "p50"), _load_label(p), _colour(m))
            for m, ps in series.items() for p in ps if p["summary"].get(metric)]


def fig_throughput_latency(points: list[dict], config: dict | None = None, machine_info: dict | None = None):
    fig = _figure(12, 5.2)
    axes = fig.subplots(1, 2)
    series, known = _series(points), known_lines(config)
    labels = {ax: _tl_panel(ax, series, metric, name, known, config or {})
              for ax, (metric, name) in zip(axes, (("ttft", "TTFT"), ("itl", "ITL")))}
    _legend(fig, series, refs=((REF, "synthetic engine (configured)"),) if known else ())
    _title(fig, "Latency against throughput: each point is one sweep point, labelled with its load", config, points,
           machine_info)
    return _finish(fig, labels)


ECDF_METRICS = (("ttft", 1000.0, "TTFT (ms)", "time to first token"),
                ("itl", 1000.0, "ITL (ms)", "inter-token latency"), ("e2e", 1.0, "E2E (s)", "end-to-end latency"))


def _ecdf(ax, p: dict, metric: str, scale: float, colour) -> None:
    xs = sorted(r[metric] * scale for r in p["records"]
                if not r["warmup"] and r["error"] is None and r.get(metric) is not None)
    if not xs:
        return
    ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=colour, lw=1.4)
    ax.plot([_stat(p, metric, "p50", scale)], [0.5], "o", color=colour, ms=5)
    ax.plot([_stat(p, metric, "p99", scale)], [0.99], "^", color=colour, ms=5)


def _ecdf_xlim(ax, metric: str, name: str, known: dict) -> None:
    """From 0; zoomed in (and said so) when the values sit in the top 30% of that range and would be one step."""
    values = [x for line in ax.get_lines() for x in line.get_xdata()] + ([known[metric]] if metric in known else [])
    lo, hi = min(values, default=0), max(values, default=1)
    ax.locator_params(axis="x", nbins=5)  # long tick labels (0.3225 s) must not run into each other
    if lo > 0.7 * hi and hi > lo:
        pad = (hi - lo) * 0.08
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel(f"{name}, zoomed: the axis does not start at 0")
    else:
        ax.set_xlim(0, hi * 1.04)
        ax.set_xlabel(name)


def _ecdf_axes(ax, metric: str, name: str, known: dict, config: dict) -> None:
    _ecdf_xlim(ax, metric, name, known)  # before the guide lines, whose x are not data
    for q, y in (("p50", 0.5), ("p99", 0.99)):
        ax.axhline(y, color="0.75", lw=0.7, zorder=0)
        ax.text(1.01, y, q, transform=ax.get_yaxis_transform(), va="center", fontsize=7, color="0.4")
    if (v := known.get(metric)) is not None:
        ax.axvline(v, **REF)
        ax.text(v, 0.03, _known_text(metric, v, config) + " ", transform=ax.get_xaxis_transform(), rotation=90,
                ha="right", va="bottom", fontsize=7, color=REF["color"])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def fig_latency_ecdf(points: list[dict], config: dict | None = None, machine_info: dict | None = None):
    from matplotlib.lines import Line2D

    fig = _figure(14, 5.4)
    axes = fig.subplots(1, 3)
    series, known = _series([p for p in points if p["summary"].get("ttft")]), known_lines(config)
    handles = []
    for mode, ps in series.items():
        for p, colour in zip(ps, _shades(mode, len(ps))):
            for ax, (metric, scale, _, _) in zip(axes, ECDF_METRICS):
                _ecdf(ax, p, metric, scale, colour)
            handles.append(Line2D([], [], color=colour, lw=2, label=p["label"]))
    for ax, (metric, _, name, title) in zip(axes, ECDF_METRICS):
        _ecdf_axes(ax, metric, name, known, config or {})
        ax.set_title(title)
    axes[0].set_ylabel("fraction of requests ≤ x   (● p50, ▲ p99)")
    fig.legend(handles=handles, loc="outside lower center", ncols=len(series) if len(series) > 1 else len(handles),
               fontsize=8, frameon=False)
    _title(fig, "Latency distributions (ECDF): one line per sweep point, darker = more load", config, points,
           machine_info)
    return _finish(fig)


def _load_axis(ax, xs: list[float], open_loop: bool) -> None:
    from matplotlib.ticker import NullLocator

    if len(xs) > 1 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.set_xlim(0, max(xs) * 1.1)
    ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])
    ax.set_xlabel("offered rate (requests/s)" if open_loop else "concurrency (requests in flight)")
    ax.grid(alpha=0.3)


def fig_load(points: list[dict], config: dict | None = None, machine_info: dict | None = None):
    fig = _figure(14, 5)
    axes = fig.subplots(1, 3)
    series, known = _series(points), known_lines(config)
    open_loop = all(p["load"].get("rate") is not None for p in points)
    for mode, ps in series.items():
        xs = [_x(p) for p in ps]
        _lines(axes[0], mode, xs, [p["summary"]["output_token_throughput"] for p in ps])
        _lines(axes[1], mode, xs, [p["summary"]["request_throughput"] for p in ps])
        _lines(axes[2], mode, xs, [_stat(p, "e2e", "p50", 1.0) for p in ps], [_stat(p, "e2e", "p99", 1.0) for p in ps])
    all_x = sorted({_x(p) for p in points})
    refs = []
    if open_loop:
        axes[1].plot(all_x, all_x, **OFFERED)
        refs.append((OFFERED, "offered rate"))
    if "e2e" in known:
        _ref_hline(axes[2], known["e2e"], _known_text("e2e", known["e2e"], config))
        refs.append((REF, "synthetic engine (configured)"))
    for ax, name in zip(axes, ("output tokens/s", "completed requests/s", "E2E latency (s)")):
        _load_axis(ax, all_x, open_loop)
        ax.set(ylabel=name, title=name)
        _from_zero(ax)
    _legend(fig, series, "E2E ", tuple(refs))
    _title(fig, "Throughput and end-to-end latency against load", config, points, machine_info)
    return _finish(fig)


FIGURES = {"throughput_latency.png": fig_throughput_latency, "latency_distributions.png": fig_latency_ecdf,
           "throughput_load.png": fig_load}


def plot(out_dir: Path, points: list[dict], config: dict | None = None, machine_info: dict | None = None) -> list[Path]:
    """The PNGs (needs matplotlib: pip install 'ziya-trt[plots]'); none when no request of the run succeeded."""
    if not any(p["summary"].get("ttft") for p in points):
        return []
    machine_info = machine_info or machine()
    files = []
    for name, make in FIGURES.items():
        files.append(out_dir / name)
        make(points, config, machine_info).savefig(files[-1], dpi=110)
    return files


# --- comparison ---------------------------------------------------------------------------------

# metric path, higher is better?
COMPARED = [("output_token_throughput", True), ("request_throughput", True), ("ttft.p50", False), ("ttft.p99", False),
            ("itl.p50", False), ("itl.p99", False), ("e2e.p99", False), ("errors", False)]


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
    print_wide(t, con)
