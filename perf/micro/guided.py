"""What guided decoding adds per token on the reference engine: the same requests with no guide, a regular expression
and a JSON schema, one at a time, in-process (no server). Each runs to max_tokens (guides that never complete
within it), so every arm decodes the same number of tokens. Two figures: end to end, the engine thread's CPU time per
token and the wall-clock inter-token latency over whole requests (the model's step dominates: what the grammar adds is
within their spread on this shared 2-core machine); and the grammar's own work per token, replayed on the tokens a run
generated: fill the bitmask, apply it to a row of logits, accept the token (``GuideState``), against copying the row.

Run: python -m perf.micro.guided [--model tiny|demo] [--runs 5] [--tokens 64]
(demo: SmolLM2-135M, a 49,152-token vocabulary; tiny: the test model's 1,000 tokens: the mask's cost grows with
the vocabulary)."""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from ziya_trt.engine.guided import write_tokenizer_info
from ziya_trt.engine.reference import ReferenceEngine
from ziya_trt.engine.request import EngineLimits, EngineRequest
from ziya_trt.text.guide import Guide
from ziya_trt.text.tokenizer import load_tokenizer

# none of them completes within the tokens asked for: each arm decodes exactly --tokens
GUIDES = {
    "none": None,
    "regex": Guide("regex", "[a-z ,.]{1000}"),
    "json_schema": Guide("json_schema", json.dumps({
        "type": "array", "minItems": 200,
        "items": {"type": "object", "additionalProperties": False, "required": ["id", "name", "tags"],
                  "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 12},
                                 "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}}}})),
}


def checkpoint(which: str, tmp: Path) -> Path:
    if which == "demo":
        from ziya_trt.fixtures.demo_model import demo_checkpoint

        return demo_checkpoint()
    from ziya_trt.fixtures.tiny import build_checkpoint

    return build_checkpoint(tmp / "tiny")


def one(engine: ReferenceEngine, ids: list[int], n: int, guide: Guide | None, seed: int,
        out_tokens: list | None = None) -> tuple[float, float]:
    """(engine-thread CPU seconds per token after the first, wall ITL in seconds) of one request."""
    times: list[float] = []
    cpu: list[float] = []
    done = threading.Event()
    tokens = [0]

    def sink(out):  # called on the engine's loop thread, right after each step
        tokens[0] += len(out.tokens)
        if out_tokens is not None:
            out_tokens.extend(out.tokens)
        times.append(time.perf_counter())
        cpu.append(time.thread_time())
        if out.final:
            done.set()

    engine.submit(EngineRequest(ids, n, streaming=True, end_id=-1, top_k=0, top_p=1.0, temperature=1.0, seed=seed,
                                guide=guide), sink)
    done.wait(300)
    assert tokens[0] == n, f"{tokens[0]} tokens, not {n}: a guide completed early"
    k = len(times) - 1
    return (cpu[-1] - cpu[0]) / k, (times[-1] - times[0]) / k


def grammar_work(engine: ReferenceEngine, guide: Guide | None, tokens: list[int]) -> float:
    """Seconds per token of the grammar's work on a row of logits (a copy of the row alone for no guide)."""
    import torch

    from ziya_trt.engine.guided import GuideState

    row = torch.randn(engine.limits.vocab_size)
    state = GuideState(engine.grammars.get(guide), engine.limits.vocab_size) if guide is not None else None
    t0 = time.perf_counter()
    for t in tokens:
        logits = row.clone()
        if state is not None:
            state.apply(logits)
            state.accept(t)
    return (time.perf_counter() - t0) / len(tokens)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "demo"], default="demo")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint(a.model, Path(tmp))
        tok = load_tokenizer(ckpt, require_chat_tokens=False)
        info = write_tokenizer_info(tok.hf, Path(tmp) / "xgrammar_tokenizer_info.json")
        engine = ReferenceEngine.from_pretrained(ckpt, EngineLimits(max_slots=1, max_input_len=64, max_seq_len=512),
                                                 tokenizer_info=info)
        ids = tok.encode("Write a list of records.")
        try:
            for g in GUIDES.values():  # warm up: compile each grammar once (cached after) and the model's first steps
                one(engine, ids, 4, g, 0)
            res, work = {}, {}
            for name, g in GUIDES.items():
                res[name], work[name] = [], []
                for seed in range(a.runs):
                    toks: list[int] = []
                    res[name].append(one(engine, ids, a.tokens, g, seed, toks))
                    work[name].append(grammar_work(engine, g, toks))
        finally:
            engine.shutdown(1)
    print(f"reference engine, {a.model} model (vocabulary {engine.limits.vocab_size}), {a.tokens} tokens a request, "
          f"{a.runs} runs; per token, min-max over runs")
    base_cpu = sorted(c for c, _ in res["none"])[a.runs // 2]
    base_itl = sorted(w for _, w in res["none"])[a.runs // 2]
    base_work = sorted(work["none"])[a.runs // 2]
    print(f"{'guide':<12} {'CPU µs/token':>18} {'ITL ms':>14} {'added CPU µs':>13} {'added ITL ms':>13} "
          f"{'grammar µs/token':>18} {'added µs':>9}")
    for name, rows in res.items():
        cpu, itl, gw = sorted(c for c, _ in rows), sorted(w for _, w in rows), sorted(work[name])
        print(f"{name:<12} {cpu[0] * 1e6:>8.0f}-{cpu[-1] * 1e6:<8.0f} {itl[0] * 1e3:>6.2f}-{itl[-1] * 1e3:<6.2f} "
              f"{(cpu[a.runs // 2] - base_cpu) * 1e6:>13.0f} {(itl[a.runs // 2] - base_itl) * 1e3:>13.2f} "
              f"{gw[0] * 1e6:>8.1f}-{gw[-1] * 1e6:<8.1f} {(gw[a.runs // 2] - base_work) * 1e6:>9.1f}")
    print("added: the median less no guide's median")


if __name__ == "__main__":
    main()
