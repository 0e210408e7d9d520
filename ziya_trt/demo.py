"""``ziya-trt demo``: the text core on the tiny offline fixture (no server yet).

Shows the Ziya prompt format with history truncation, sentencepiece-exact tokenisation, and the
streaming detokeniser on Chinese, emoji and byte-fallback text with a stop string held back.
"""

from __future__ import annotations

import random
import time

from rich.console import Console
from rich.table import Table


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the offline demo")
    p.add_argument("--seed", type=int, default=0, help="chunking seed for the streaming demo")
    p.set_defaults(func=run)


def run(args) -> int:
    from .detok import TextStream
    from .paths import fixture_checkpoint
    from .prompt import assistant, build_prompt, get_template, user
    from .tokenizer import load_tokenizer

    con = Console()
    t0 = time.perf_counter()
    ckpt = fixture_checkpoint()
    tok = load_tokenizer(ckpt)
    con.print(f"[bold]tokenizer[/] {ckpt} ({tok.vocab_size} tokens, loaded in {time.perf_counter() - t0:.2f}s)")

    history = [user("你好，请问你是谁？"), assistant("我是一个人工智能助手。"), user("How do I serve a model?"),
               assistant("With in-flight batching."), user("请写一首关于春天的诗 🌸")]
    tmpl = get_template("ziya")
    full = build_prompt(history, tmpl, tok.count)
    cut = build_prompt(history, tmpl, tok.count, budget=full.n_tokens - 5)
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
