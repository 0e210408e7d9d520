"""Plots, the summary table and `--format json`, on made-up results: no server, no benchmark."""

import argparse
import io
import json
import random
from dataclasses import asdict

import numpy as np
import pytest
from rich.console import Console

from perf import report
from perf.bench import BenchConfig, label, overhead, run_bench
from perf.load import LoadConfig
from perf.metrics import RequestRecord, Slo, calculate_metrics

MODES = ("text", "token", "openai")
KNOWN = {"known_ttft_s": 0.02, "known_itl_s": 0.02}
MACHINE = {"cpu_count": 16}


def config(modes=("text",), known=True, **kw) -> dict:
    return {"url": "grpc://127.0.0.1:8001", "model": "ziya", "modes": list(modes), "engine_model": "synthetic",
            "dataset": "synthetic", "isl": 128, "osl": 16, "serve": "synthetic", "osl_forced": True,
            **(KNOWN if known else {"known_ttft_s": None, "known_itl_s": None}), **kw}


def records(n: int, ttft: float, itl: float, in_flight: int, osl: int = 16, seed: int = 0) -> list[RequestRecord]:
    """n requests through in_flight slots, each TTFT (plus up to 4 ms) then osl tokens ITL apart; and one failure."""
    rng, free, out = random.Random(seed), [0.0] * in_flight, []
    for i in range(n):
        k = min(range(in_flight), key=free.__getitem__)
        first = free[k] + ttft + rng.random() * 0.004
        chunks = [first + j * itl * (1 + rng.random() * 0.01) for j in range(osl)]
        out.append(RequestRecord(index=i, t_send=free[k], t_first=first, t_last=chunks[-1], chunk_times=chunks,
                                 input_tokens=128, output_tokens=osl, finish_reason="length"))
        free[k] = chunks[-1]
    return out + [RequestRecord(index=n, t_send=0.01, error="boom", error_type="ServerError")]


def point(load: LoadConfig, mode: str = "text", multi: bool = False, n: int = 24, seed: int = 0) -> dict:
    slow = {"text": 0.0015, "token": 0.0008, "openai": 0.003}[mode] * (1 + (load.concurrency or 8) / 16)
    recs = records(n, 0.02 + slow, 0.02 + slow / 20, load.concurrency or 8, seed=seed)
    s = calculate_metrics(recs, Slo(ttft_ms=40))
    return {"label": label(load, mode if multi else None), "mode": mode, "load": asdict(load), "started_at": 0.0,
            "summary": s.to_dict(), "overhead": overhead(s, 0.02, 0.02), "records": [r.to_dict() for r in recs]}


def closed(modes=("text",)) -> list[dict]:
    return [point(LoadConfig(concurrency=c, num_requests=24), m, len(modes) > 1, seed=c)
            for c in (1, 4, 16) for m in modes]


def open_loop() -> list[dict]:
    return [point(LoadConfig(concurrency=None, rate=r, num_requests=24), seed=int(r)) for r in (2, 4, 8)]


RUNS = {"closed": (closed, config()), "open": (open_loop, config()), "multi-mode": (lambda: closed(MODES), config(MODES))}


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def ref_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


@pytest.mark.parametrize("kind", RUNS)
def test_the_pngs_are_written(mpl, tmp_path, kind):
    make, cfg = RUNS[kind]
    files = report.plot(tmp_path, make(), cfg, MACHINE)
    assert [f.name for f in files] == ["throughput_latency.png", "latency_distributions.png", "throughput_load.png"]
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000 for f in files)


def test_no_plots_when_nothing_succeeded(mpl, tmp_path):
    p = point(LoadConfig(concurrency=2))
    p["summary"] = calculate_metrics([RequestRecord(index=0, t_send=0, error="x", error_type="E")]).to_dict()
    assert report.plot(tmp_path, [p], config()) == []


@pytest.mark.parametrize("kind", RUNS)
def test_every_value_axis_starts_at_0(mpl, kind):
    make, cfg = RUNS[kind]
    points = make()
    for fig in (report.fig_throughput_latency(points, cfg, MACHINE), report.fig_load(points, cfg, MACHINE)):
        for ax in fig.axes:
            lo, hi = ax.get_ylim()
            assert lo == 0 and hi > np.nanmax([y for ln in ax.get_lines() for y in ln.get_ydata()]), ax.get_title()
    ecdf = report.fig_latency_ecdf(points, cfg, MACHINE)
    assert all(ax.get_ylim() == (0, 1.02) for ax in ecdf.axes)


def test_the_titles_carry_the_run_details(mpl):
    points = closed(MODES)
    for make in report.FIGURES.values():
        title = make(points, config(MODES), MACHINE).get_suptitle().replace("\n", " ")
        for part in ("engine: synthetic", "model: ziya", "isl 128 / osl 16", "modes: text, token, openai",
                     "closed loop, 24 requests/point", "16 CPUs"):
            assert part in title
    title = report.fig_load(open_loop(), config(), MACHINE).get_suptitle().replace("\n", " ")
    assert "open loop (burstiness 1)" in title and "mode: text" in title
    assert "server: grpc://127.0.0.1:8001" in report.run_details(config(serve=None), points, MACHINE)


def test_the_synthetic_engines_figures_are_drawn_when_known(mpl):
    points = closed()
    ttft, itl = report.fig_throughput_latency(points, config(), MACHINE).axes
    assert [tuple(ln.get_ydata()) for ln in ref_lines(ttft)] == [(20.0, 20.0)]
    assert "synthetic engine: TTFT 20 ms" in texts(ttft) and "synthetic engine: ITL 20 ms" in texts(itl)
    e2e = report.fig_load(points, config(), MACHINE).axes[2]
    assert ref_lines(e2e)[0].get_ydata()[0] == pytest.approx(0.02 + 15 * 0.02)  # TTFT + (osl - 1) x ITL
    ecdf = report.fig_latency_ecdf(points, config(), MACHINE).axes
    assert [tuple(ref_lines(ax)[0].get_xdata()) for ax in ecdf[:2]] == [(20.0, 20.0), (20.0, 20.0)]
    for fig in (report.fig_throughput_latency(points, config(known=False), MACHINE),
                report.fig_load(points, config(known=False), MACHINE)):
        assert not any(ref_lines(ax) for ax in fig.axes)
        assert not any("synthetic engine" in t for ax in fig.axes for t in texts(ax))


def test_point_labels_collide_with_nothing_and_stay_inside(mpl):
    from matplotlib.text import Text

    fig = report.fig_throughput_latency(closed(MODES), config(MODES), MACHINE)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        frame = ax.get_window_extent(r)
        labels = [t for t in ax.texts if t.get_text().startswith("c=")]
        assert sorted(t.get_text() for t in labels) == sorted(["c=1", "c=4", "c=16"] * 3)  # mode prefix dropped
        boxes = [Text.get_window_extent(t, r) for t in labels]  # the text, not its leader line
        assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
        assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[:i] if a.overlaps(b)]


def test_points_are_coloured_by_mode(mpl):
    fig = report.fig_throughput_latency(closed(MODES), config(MODES), MACHINE)
    colours = {ln.get_color() for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"}
    assert colours == {"tab:blue", "tab:orange", "tab:green"}
    assert [t.get_text() for t in fig.legends[0].get_texts()][:3] == list(MODES)


def test_distributions_are_ecdfs_with_p50_and_p99_marked(mpl):
    points = closed(MODES)
    fig = report.fig_latency_ecdf(points, config(MODES), MACHINE)
    for ax in fig.axes:
        steps = [ln for ln in ax.get_lines() if ln.get_drawstyle() == "steps-post"]
        assert len(steps) == len(points) and all(ln.get_ydata()[-1] == 1.0 for ln in steps)
        marks = [tuple(ln.get_ydata()) for ln in ax.get_lines() if ln.get_marker() in ("o", "^")]
        assert marks.count((0.5,)) == marks.count((0.99,)) == len(points)
    assert "zoomed" in fig.axes[1].get_xlabel()  # the ITLs sit within 1% of 20 ms: zoomed in, and said so
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [p["label"] for p in sorted(
        points, key=lambda p: MODES.index(p["mode"]))]


def test_the_load_panels(mpl):
    fig = report.fig_load(open_loop(), config(), MACHINE)
    assert [ax.get_title() for ax in fig.axes] == ["output tokens/s", "completed requests/s", "E2E latency (s)"]
    assert all(ax.get_xlabel() == "offered rate (requests/s)" for ax in fig.axes)
    offered = [ln for ln in fig.axes[1].get_lines() if ln.get_linestyle() == "-."]
    assert list(offered[0].get_xdata()) == list(offered[0].get_ydata()) == [2, 4, 8]
    fig = report.fig_load(closed(), config(), MACHINE)
    assert fig.axes[0].get_xlabel() == "concurrency (requests in flight)"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "4", "16"]


def test_json_summary_parses_and_has_every_point():
    points, out = closed(MODES), io.StringIO()
    report.print_json(points, ["runs/x/results.json"], file=out)
    doc = json.loads(out.getvalue())
    assert [p["label"] for p in doc["points"]] == [p["label"] for p in points]
    assert all(set(p) == {"label", "mode", "load", "summary", "overhead"} for p in doc["points"])
    assert doc["points"][0]["summary"]["ttft"]["p50"] == points[0]["summary"]["ttft"]["p50"]
    assert doc["points"][-1]["overhead"]["added_ttft_p50_ms"] > 0 and doc["files"] == ["runs/x/results.json"]


def test_bench_format_json_prints_only_json_on_stdout(tmp_path, capsys, monkeypatch):
    points = iter(closed(MODES))
    monkeypatch.setattr("perf.bench.run_point", lambda *a, **kw: next(points))
    cfg = BenchConfig(url="grpc://127.0.0.1:1", modes=MODES, openai_url="http://127.0.0.1:1/v1",
                      points=[LoadConfig(concurrency=c) for c in (1, 4, 16)], known_ttft_s=0.02, known_itl_s=0.02)
    run_bench(cfg, [], None, tmp_path, {"dataset": "synthetic"}, plots=False, fmt="json")
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert len(doc["points"]) == 9 and doc["points"][8]["label"] == "openai c=16"
    assert "wrote" in err and "stack+client add" in err
    assert json.loads((tmp_path / "results.json").read_text())["config"]["engine_model"] == "tensorrt_llm"


def test_the_cli_takes_format():
    from perf.cli import add_parser

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers())
    assert ap.parse_args(["bench"]).format == "table"
    assert ap.parse_args(["bench", "--format", "json"]).format == "json"
    with pytest.raises(SystemExit):
        ap.parse_args(["bench", "--format", "yaml"])


def big_points() -> list[dict]:
    points = [point(LoadConfig(concurrency=None, rate=4, num_requests=24), "openai", True)] + closed()
    points[0]["summary"]["output_token_throughput"] = 5175.66
    return points


def test_the_piped_table_is_not_cut_at_80_columns():
    con = Console(file=io.StringIO())  # not a terminal: 80 columns by default
    assert not con.is_terminal and con.width == 80
    report.print_table(big_points(), con)
    out = con.file.getvalue()
    assert "5175.7" in out and "goodput" in out and "openai rate=4" in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_a_narrow_terminal_folds_cells_rather_than_cutting_them():
    con = Console(file=io.StringIO(), force_terminal=True, width=70, color_system=None)
    report.print_table(big_points(), con)
    out = con.file.getvalue()
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 70


def test_the_piped_comparison_is_not_cut_either():
    a = {"points": big_points()}
    b = json.loads(json.dumps(a))
    b["points"][0]["summary"]["ttft"]["p99"] *= 3
    con = Console(file=io.StringIO())
    report.print_compare(report.compare(a, b), con)
    assert "REGRESSION" in con.file.getvalue() and "…" not in con.file.getvalue()
