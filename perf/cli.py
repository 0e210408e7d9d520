"""``ziya-trt bench``: run a benchmark sweep (optionally against a server it starts itself), and
``ziya-trt bench compare A.json B.json``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def add_parser(sub) -> None:
    from ziya_trt.engine.synthetic import SCHEDULES as SYNTHETIC_SCHEDULES

    p = sub.add_parser("bench", help="latency/throughput benchmark of a Triton LLM endpoint (or `bench compare`)")
    p.add_argument("--url", help="grpc://host:port or http://host:port of a running server")
    p.add_argument("--serve", choices=["synthetic", "reference", "demo"], help="start this server for the run")
    p.add_argument("--model", default=None,
                   help="model to call (default: ziya; with --mode token alone: the engine model)")
    p.add_argument("--engine-model", help="the engine model token mode calls (default: the served engine)")
    p.add_argument("--mode", default="text",
                   help="text: through the front door; token: straight to the engine, tokenised here; openai: the "
                        "OpenAI-compatible chat endpoint. Several, e.g. text,token,openai: side by side at each point")
    p.add_argument("--openai-url", help="the OpenAI-compatible API's base URL (default: the started server's, "
                                        "or http://HOST:PORT/v1 of an http:// --url)")
    p.add_argument("--metrics-url", action="append", default=None,
                   help="the server's Prometheus endpoint, scraped before and after each point into results.json "
                        "(repeatable; default with --serve: its metrics port and the OpenAI API's /metrics)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the server's, if local)")
    p.add_argument("--template", help="ziya or chat_template (default: the server's)")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic, chat (bundled zh/en set), multiturn (KV reuse vs none, TTFT per turn), or a JSONL file")
    p.add_argument("--turns", type=int, default=8, help="multiturn: turns per conversation")
    p.add_argument("--conversations", type=int, default=4, help="multiturn: conversations per arm")
    p.add_argument("--question-tokens", type=int, default=150,
                   help="multiturn: tokens of each new question (each answer is --osl tokens)")
    p.add_argument("--isl", type=int, default=128, help="synthetic: exact input tokens")
    p.add_argument("--osl", type=int, default=64, help="synthetic: exact output tokens (min_tokens = max_tokens)")
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--concurrency", default=None,
                   help="closed loop sweep, e.g. 1,2,4,8 (default 1,4,16); multiturn: conversations in flight (default 1)")
    p.add_argument("--rate", help="open loop sweep in requests/s, e.g. 2,4,8 (overrides --concurrency)")
    p.add_argument("--max-concurrency", type=int, help="open loop: cap on requests in flight")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 = Poisson")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-duration-s", type=float, default=600.0, help="hard bound per sweep point")
    p.add_argument("--timeout-s", type=float, default=120.0, help="per-response timeout")
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests end at eos (no min_tokens)")
    p.add_argument("--slo-ttft-ms", type=float)
    p.add_argument("--slo-tpot-ms", type=float)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/bench-<time>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="the summary on stdout: a table, or JSON (progress and notes then go to stderr)")
    p.add_argument("--synthetic-rate", type=float, default=50.0, help="--serve synthetic: tokens/s per stream")
    p.add_argument("--synthetic-ttft", type=float, default=0.02, help="--serve synthetic: first-token delay (s)")
    p.add_argument("--synthetic-schedule", choices=SYNTHETIC_SCHEDULES, default="stream",
                   help="--serve synthetic: each request on a clock of its own (default: every token reaches the "
                        "server alone), or one decoding step for all running requests (as TensorRT-LLM emits)")
    p.set_defaults(func=run)
    sub2 = p.add_subparsers(dest="bench_cmd", metavar="compare")
    c = sub2.add_parser("compare", help="compare two results.json and flag regressions")
    c.add_argument("a", type=Path, help="a results.json, or the run folder that holds it")
    c.add_argument("b", type=Path)
    c.add_argument("--threshold", type=float, default=0.05, help="relative change that counts as a regression")
    c.set_defaults(func=run_compare)


def _results(path: Path) -> dict | None:
    """A results.json (or the folder holding one), or None after saying why not."""
    f = path / "results.json" if path.is_dir() else path
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        print(f"error: {f} does not exist", file=sys.stderr)
    except (OSError, ValueError) as e:
        print(f"error: {f} is not a results.json ({type(e).__name__})", file=sys.stderr)
    return None


def run_compare(args) -> int:
    from .report import compare, print_compare

    a, b = _results(args.a), _results(args.b)
    if a is None or b is None:
        return 2
    rows = compare(a, b, args.threshold)
    print_compare(rows)
    n = sum(r["regression"] for r in rows)
    print(f"{n} regression(s) beyond {args.threshold:.0%}" if n else "no regressions")
    return 1 if n else 0


def _start_server(args):
    from ziya_trt.cache import cache_dir
    from ziya_trt.fixtures.tiny import fixture_checkpoint
    from ziya_trt.serving.config import ServeConfig
    from ziya_trt.serving.process.serve_process import ServeProcess

    if args.serve == "demo":
        from ziya_trt.fixtures.demo_model import demo_checkpoint

        ckpt = demo_checkpoint()
        cfg = ServeConfig(engine="reference", tokenizer_dir=ckpt, model_dir=ckpt, template="chat_template",
                          dtype="bfloat16", max_batch_size=8, max_queue_size=256, max_input_len=3584, max_seq_len=4096)
    else:
        ckpt = fixture_checkpoint()
        kw = dict(synthetic_tokens_per_s=args.synthetic_rate, synthetic_first_token_s=args.synthetic_ttft,
                  synthetic_schedule=args.synthetic_schedule,
                  max_batch_size=512, max_queue_size=1024, max_input_len=4096, max_seq_len=8192) \
            if args.serve == "synthetic" else dict(model_dir=ckpt, max_batch_size=16, max_queue_size=256,
                                                  max_input_len=1024, max_seq_len=2048)
        cfg = ServeConfig(engine=args.serve, tokenizer_dir=ckpt, **kw)
    d = cache_dir("bench-server", args.serve)
    print(f"starting ziya-trt serve ({args.serve}) in a process of its own ... (logs in {d})", file=sys.stderr,
          flush=True)
    return ServeProcess(cfg.resolved(), d).start(), cfg


def _cpu_watch(srv, url: str):
    from .process_cpu import Watch, server_root

    if srv is not None:
        return Watch(srv.proc.pid)
    root, why = server_root(url)
    return Watch(root, why)


def _run_multiturn(args, url, model, openai_url, modes, tok, tok_dir) -> int:
    from ziya_trt.client import AsyncZiyaClient

    from . import multiturn

    if len(modes) != 1 or modes[0] not in ("text", "openai"):
        print("error: multiturn runs one --mode: text or openai (the paths that report cached tokens)",
              file=sys.stderr)
        return 2
    conc = _ints(args.concurrency or "1")
    if len(conc) != 1:
        print("error: multiturn takes one --concurrency (conversations in flight)", file=sys.stderr)
        return 2
    try:
        cfg = multiturn.MultiTurnConfig(conversations=args.conversations, turns=args.turns,
                                        question_tokens=args.question_tokens, answer_tokens=args.osl,
                                        concurrency=conc[0], seed=args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if modes[0] == "openai":
        if not openai_url:
            print("error: mode openai needs the server's OpenAI-compatible URL (--openai-url)", file=sys.stderr)
            return 2
        from .openai_client import AsyncOpenAIClient

        def make_client():
            return AsyncOpenAIClient(openai_url, model, timeout_s=args.timeout_s)
    else:
        def make_client():
            return AsyncZiyaClient(url, model=model, timeout_s=args.timeout_s)
    out = args.out or Path("runs") / time.strftime("multiturn-%Y%m%d-%H%M%S")
    extra = {"url": url, "model": model, "mode": modes[0], "serve": args.serve,
             "tokenizer": str(tok_dir) if tok_dir else None,
             "question_token_counts": "tokenizer" if tok is not None else "about 3 characters a token"}
    multiturn.run_and_report(make_client, cfg, multiturn.questions(tok, cfg), out, extra,
                             plots=not args.no_plots, fmt=args.format)
    return 0


def run(args) -> int:
    from ziya_trt.client import ZiyaClient
    from ziya_trt.text.tokenizer import load_tokenizer

    from . import workload
    from .bench import BenchConfig, run_bench
    from .load import LoadConfig
    from .metrics import Slo

    if not args.url and not args.serve:
        print("error: give --url of a running server, or --serve synthetic|reference|demo", file=sys.stderr)
        return 2
    srv = None
    known_ttft = known_itl = None
    try:
        if args.serve:
            srv, scfg = _start_server(args)
            url = f"grpc://{srv.grpc_url}"
            if args.serve == "synthetic":
                known_ttft, known_itl = args.synthetic_ttft, 1.0 / args.synthetic_rate
        else:
            url = args.url
        modes = tuple(m.strip() for m in args.mode.split(",") if m.strip())
        token_only = modes == ("token",)
        model = (args.model if not token_only else None) or "ziya"
        engine_model = args.engine_model or (args.model if token_only else None) or (
            scfg.engine_name if srv else "tensorrt_llm")
        openai_url = args.openai_url or (srv.openai_url if srv else f"{url}/v1" if url.startswith("http://") else None)
        if not srv and not ZiyaClient(url).is_ready():
            print(f"error: no server ready at {url} (is it running, and is that its gRPC or HTTP port?)", file=sys.stderr)
            return 2
        # a server of this run's own is known; of another, only what the options say (its configuration,
        # which holds paths, is for the operator)
        template = args.template or (scfg.template if srv else "ziya")
        tok_dir = args.tokenizer or (str(scfg.tokenizer_dir) if srv else None)
        tok = load_tokenizer(tok_dir, require_chat_tokens=False) if tok_dir and Path(tok_dir).is_dir() else None
        if args.dataset == "multiturn":
            return _run_multiturn(args, url, model, openai_url, modes, tok, tok_dir)
        n_items = args.num_requests + args.warmup
        if args.dataset == "synthetic":
            if tok is None:
                print("error: the synthetic dataset needs --tokenizer (exact token lengths)", file=sys.stderr)
                return 2
            items = workload.synthetic(tok, min(n_items, 64), args.isl, args.osl, args.seed)
        elif args.dataset == "chat":
            items = workload.chat_set(n_items, args.seed)
        else:
            items = workload.from_jsonl(args.dataset, n_items)
        common = dict(num_requests=args.num_requests, warmup=args.warmup, seed=args.seed,
                      max_duration_s=args.max_duration_s, ignore_eos=not args.no_ignore_eos)
        if args.rate:
            points = [LoadConfig(concurrency=args.max_concurrency, rate=r, burstiness=args.burstiness, **common)
                      for r in _floats(args.rate)]
        else:
            points = [LoadConfig(concurrency=c, **common) for c in _ints(args.concurrency or "1,4,16")]
        if "token" in modes and tok is None:
            print("error: --mode token needs --tokenizer (the client tokenises)", file=sys.stderr)
            return 2
        try:
            cfg = BenchConfig(url=url, model=model, modes=modes, engine_model=engine_model, openai_url=openai_url,
                              template=template, points=points, slo=Slo(args.slo_ttft_ms, args.slo_tpot_ms),
                              known_ttft_s=known_ttft, known_itl_s=known_itl, timeout_s=args.timeout_s,
                              metrics_urls=tuple(args.metrics_url or (
                                  (srv.metrics_url, f"http://{srv.http_url}/metrics") if srv else ())),
                              cpu=_cpu_watch(srv, url))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        out = args.out or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
        extra = {"dataset": args.dataset, "isl": args.isl, "osl": args.osl, "serve": args.serve, "mode": args.mode,
                 "synthetic_schedule": args.synthetic_schedule if args.serve == "synthetic" else None,
                 "tokenizer": str(tok_dir) if tok_dir else None,
                 "osl_forced": not args.no_ignore_eos,
                 "token_counts": "tokenizer" if tok is not None else "server-reported"}
        run_bench(cfg, items, tok, out, extra, plots=not args.no_plots, fmt=args.format)
        return 0
    finally:
        if srv is not None:
            srv.stop()
