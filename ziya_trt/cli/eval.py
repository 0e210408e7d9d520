"""``ziya-trt eval agree`` and ``ziya-trt eval bench``: does a served engine still answer as the model does?
The commands only build the typed configs (``AgreeConfig``, ``BenchConfig``); ``ziya_trt.eval`` does the rest.

Exit status: 0 the run passed its thresholds (or had none), 3 it ran and missed one, 1 it could not run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MISSED = 3
API_KEY_ENV = "ZIYA_TRT_API_KEY"  # as `ziya-trt serve` reads the operator's key


def _common(p) -> None:
    p.add_argument("--model", default="ziya", help="the served model's name (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default: runs/eval-<kind>-<hash of the options>, so the same command resumes)")
    p.add_argument("--api-key", default=None, help=f"the server's API key (default: ${API_KEY_ENV})")
    p.add_argument("--timeout-s", type=float, default=300.0, metavar="SECONDS", help="per request (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="no plot (the results are the same)")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="check a served engine's answers: against transformers (agree), or on "
                                    "multiple-choice benchmarks, two engines side by side (bench)")
    ev = p.add_subparsers(dest="eval_cmd", metavar="agree|bench")
    a = ev.add_parser("agree", help="greedy answers of the served engine against transformers on the checkpoint")
    a.add_argument("--url", required=True, help="the OpenAI-compatible API, http://HOST:PORT[/v1]")
    a.add_argument("--model-dir", type=Path, required=True, help="the checkpoint (transformers) and its tokenizer")
    a.add_argument("--template", choices=["auto", "ziya", "chat_template"], default="auto",
                   help="the server's prompt template (default auto: the tokenizer's chat_template when it has one "
                        "and no Ziya markers, else ziya); the served prompt's token count checks it")
    a.add_argument("--ref-dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="transformers' dtype (default: %(default)s)")
    a.add_argument("--device", default="auto", help="transformers' device: auto (cuda if there is one), cpu, cuda")
    a.add_argument("--max-tokens", type=int, default=32, help="tokens compared per prompt (default: %(default)s)")
    a.add_argument("--prompts", type=Path, default=None,
                   help="a JSONL of {id, kind, messages} (default: the bundled bilingual set)")
    a.add_argument("--min-match", type=float, default=None,
                   help="fail (exit 3) when the exact-match rate is under this (e.g. 0.9)")
    a.add_argument("--max-logprob-diff", type=float, default=None,
                   help="fail (exit 3) when the p95 of |Δ log p| over matched tokens is over this (e.g. 0.05)")
    _common(a)
    a.set_defaults(func=run_agree)
    b = ev.add_parser("bench", help="multiple-choice accuracy (C-Eval, CMMLU, MMLU) of one engine, or two side by side")
    b.add_argument("--url", action="append", required=True,
                   help="the OpenAI-compatible API, http://HOST:PORT[/v1]; twice: A (reference) then B (candidate)")
    b.add_argument("--tasks", default="ceval,cmmlu,mmlu", help="comma-separated (default: %(default)s)")
    b.add_argument("--data", type=Path, default=None,
                   help="a folder with the tasks' files (see docs/eval.md); default: ModelScope's MsDataset")
    b.add_argument("--subjects", default="", help="comma-separated subjects (default: every one in --data)")
    b.add_argument("--limit", type=int, default=None, help="the first N items of each subject")
    b.add_argument("--fewshot", type=int, default=0, help="examples from the dev split, first N (default: 0)")
    b.add_argument("--max-tokens", type=int, default=16, help="answer tokens (default: %(default)s)")
    b.add_argument("--concurrency", type=int, default=4, help="requests in flight per run (default: %(default)s)")
    b.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)")
    b.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: %(default)s)")
    b.add_argument("--max-drop", type=float, default=None,
                   help="fail (exit 3) when the 95%% interval of B - A reaches below -this (e.g. 0.01)")
    _common(b)
    b.set_defaults(func=run_bench)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def openai_base(url: str) -> str:
    url = url.rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


def _out(kind: str, options: dict) -> Path:
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return Path("runs") / f"eval-{kind}-{digest}"


def _command(args) -> list[str]:
    return ["ziya-trt", *getattr(args, "argv", [])]


def run_agree(args) -> int:
    from rich.console import Console

    from ..eval.agree import AgreeConfig, run_agree as run

    kw = dict(url=openai_base(args.url), model_dir=args.model_dir, model=args.model, template=args.template,
              dtype=args.ref_dtype, device=args.device, max_tokens=args.max_tokens, prompts=args.prompts,
              min_match=args.min_match, max_logprob_diff=args.max_logprob_diff,
              api_key=args.api_key or os.environ.get(API_KEY_ENV), timeout_s=args.timeout_s)
    cfg = AgreeConfig(out=args.out or Path("."), **kw)
    if args.out is None:
        cfg = AgreeConfig(out=_out("agree", cfg.options()), **kw)
    _, misses = run(cfg, _command(args), Console(), plots=not args.no_plots)
    return MISSED if misses else 0


def run_bench(args) -> int:
    from rich.console import Console

    from ..eval.bench import BenchConfig, run_bench as run

    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    kw = dict(urls=tuple(openai_base(u) for u in args.url), tasks=split(args.tasks), data=args.data,
              subjects=split(args.subjects), limit=args.limit, fewshot=args.fewshot, model=args.model,
              max_tokens=args.max_tokens, concurrency=args.concurrency, n_boot=args.bootstrap, seed=args.seed,
              max_drop=args.max_drop, api_key=args.api_key or os.environ.get(API_KEY_ENV), timeout_s=args.timeout_s)
    cfg = BenchConfig(out=args.out or Path("."), **kw)
    if args.out is None:
        cfg = BenchConfig(out=_out("bench", cfg.options()), **kw)
    _, misses = run(cfg, _command(args), Console(), plots=not args.no_plots)
    return MISSED if misses else 0
