"""GPU smoke test, in one step: needs an NVIDIA GPU and TensorRT-LLM 1.2.1
(nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3; ``engine_build.target`` names the containers that carry it).
Not run here: the development machines have neither, so only its stop on a machine without them and its checks
(against the CPU reference engine) are tested.

    bash engine_build/smoke.sh                       # in the container, from a checkout: installs it, then this
    python -m engine_build.smoke --out runs/smoke    # the same, with the checkout installed
    python -m engine_build.smoke --dtypes bf16,fp8   # fp8 too (a GPU with FP8 tensor cores)
    python -m engine_build.smoke --tp 2 --pp 2       # the multi-GPU launch (mpirun, one rank per GPU): 4 GPUs

For each dtype it builds a tiny Ziya-shaped engine from random weights (``ziya_trt.fixtures.tiny``), serves it
with ``ziya-trt serve --engine tensorrt_llm`` and checks (``run_checks``):

1. a chat over gRPC in text mode (``ZiyaClient``), whole and streamed: the same text;
2. the same chat through HTTP generate (``POST /v2/models/ziya/generate``): the same text;
3. the same chat through ``/v1/chat/completions``, streamed (the ``openai`` package): the same text;
4. a long ``/v1`` stream closed after a few chunks: the HTTP port's ``/metrics`` counts one cancellation, no
   request holds an engine slot any more, and the chat after it still gets the same answer.

Decoding is greedy with ``min_tokens`` = ``max_tokens`` (random weights may say EOS at once otherwise), and the
prompt is shorter than one KV-cache block (no prefix is reused), so every front must give the same text. The
first failure stops the run: exit 1, saying what failed; a machine that cannot run it: exit 2, saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .build import BuildError, find_source_tree, trtllm_version
from .target import TRTLLM_VERSION, container_for

NEEDS = f"needs an NVIDIA GPU and TensorRT-LLM {TRTLLM_VERSION} ({container_for(TRTLLM_VERSION)})"
QUESTION = "你好，请问你是谁？"  # 11 prompt tokens with the fixture's tokenizer and the Ziya template
KV_BLOCK_TOKENS = 32  # trtllm-build's default tokens_per_block: a shorter prompt has no block to reuse
ANSWER_TOKENS = 24  # per answer in checks 1-3
CANCEL_AFTER_CHUNKS = 3


class SmokeFailure(Exception):
    """A check that failed; the message says which and what was seen."""


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise SmokeFailure(what)


def wait_for(read, pred, timeout_s: float = 15.0, period_s: float = 0.1):
    """Poll ``read()`` until ``pred`` holds or the time is up; the last value either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = read()
        if pred(v) or time.monotonic() > deadline:
            return v
        time.sleep(period_s)


# --- what a server answers -------------------------------------------------------------------------------


def greedy(n: int) -> dict:
    """The sampling every check sends, in ``SamplingParams`` names: argmax, exactly ``n`` tokens."""
    return {"max_new_tokens": n, "min_tokens": n, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
            "repetition_penalty": 1.0}


def sample(metrics_text: str, name: str, **labels) -> float | None:
    """The sum of the Prometheus series ``name`` whose labels include ``labels``; None where there is none."""
    found = None
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", metrics_text, re.M):
        if all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            found = (found or 0.0) + float(m.group(2))
    return found


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def engine_active(srv) -> float | None:
    """Requests holding an engine slot: the backend's ``nv_trt_llm_request_metrics{request_type="active"}`` (which
    the engine stand-ins export too), else the stand-ins' own gauge; None if neither is there (a backend built
    without metrics)."""
    from ziya_trt.serving.triton.gauges import METRIC_ACTIVE

    text = scrape(srv.metrics_url)
    v = sample(text, "nv_trt_llm_request_metrics", request_type="active")
    return v if v is not None else sample(text, METRIC_ACTIVE)


def openai_cancelled(srv) -> float:
    return sample(scrape(f"http://{srv.http_url}/metrics"), "ziya_request_errors_total", api="openai",
                  kind="cancelled") or 0.0


def check_answer(where: str, text: str, n: int, result=None) -> None:
    expect(bool(text.strip()), f"{where}: empty answer")
    if result is not None:
        reason = result.finish_reason.value if result.finish_reason else None
        expect(reason == "length" and result.completion_tokens == n,
               f"{where}: finish_reason {reason}, {result.completion_tokens} tokens; expected length after {n} "
               f"(min_tokens = max_tokens = {n}); text {text!r}")


def check_grpc(srv, n: int) -> tuple[str, int]:
    """1: the chat over gRPC text mode, whole and streamed; (its text, its prompt tokens)."""
    from ziya_trt.client import ZiyaClient

    with ZiyaClient(f"grpc://{srv.grpc_url}", timeout_s=120) as c:
        whole = c.chat(QUESTION, **greedy(n))
        check_answer("gRPC chat", whole.text, n, whole)
        stream = c.stream_chat(QUESTION, **greedy(n))
        pieces = list(stream)
    check_answer("gRPC streamed chat", "".join(pieces), n, stream.result)
    expect("".join(pieces) == whole.text, f"gRPC: streamed {''.join(pieces)!r} != whole {whole.text!r}")
    expect(len(pieces) > 1, f"gRPC: the stream came in {len(pieces)} piece(s), not token by token")
    return whole.text, whole.prompt_tokens or 0


def check_http_generate(srv, n: int, expected: str) -> None:
    """2: the same chat through HTTP generate, the same fields as the client sends."""
    body = {"messages": json.dumps([{"role": "user", "content": QUESTION}], ensure_ascii=False),
            "max_tokens": n, "min_tokens": n, "top_k": 1, "temperature": 1.0, "top_p": 1.0,
            "repetition_penalty": 1.0, "stream": False}
    req = urllib.request.Request(f"http://{srv.http_url}/v2/models/ziya/generate", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.loads(r.read())
    text = out.get("text_output")
    expect(isinstance(text, str), f"HTTP generate: no text_output in {out}")
    check_answer("HTTP generate", text, n)
    expect(out.get("finish_reason") == "length", f"HTTP generate: finish_reason {out.get('finish_reason')}")
    expect(text == expected, f"HTTP generate: {text!r} != the gRPC answer {expected!r}")


def openai_client(srv):
    import openai

    return openai.OpenAI(base_url=f"http://{srv.http_url}/v1", api_key="unused", max_retries=0, timeout=120)


def openai_stream(oa, n: int):
    return oa.chat.completions.create(model="ziya", messages=[{"role": "user", "content": QUESTION}],
                                      max_tokens=n, temperature=1.0, top_p=1.0, stream=True,
                                      stream_options={"include_usage": True},
                                      extra_body={"top_k": 1, "min_tokens": n, "repetition_penalty": 1.0})


def check_openai(srv, n: int, expected: str) -> None:
    """3: the same chat through /v1/chat/completions, streamed."""
    pieces, reasons, usage = [], [], None
    with openai_stream(openai_client(srv), n) as stream:
        for chunk in stream:
            usage = chunk.usage or usage
            for ch in chunk.choices:
                pieces.append(ch.delta.content or "")
                reasons += [ch.finish_reason] if ch.finish_reason else []
    text = "".join(pieces)
    check_answer("/v1/chat/completions", text, n)
    expect(reasons == ["length"], f"/v1/chat/completions: finish reasons {reasons}, expected ['length']")
    expect(usage is not None and usage.completion_tokens == n,
           f"/v1/chat/completions: usage {usage}, expected {n} completion tokens")
    expect(text == expected, f"/v1/chat/completions: {text!r} != the gRPC answer {expected!r}")


def check_cancel(srv, n_long: int, n: int, expected: str) -> str:
    """4: a long /v1 stream closed after a few chunks frees its slot and is counted; the next chat is answered."""
    before = openai_cancelled(srv)
    chunks = 0
    stream = openai_stream(openai_client(srv), n_long)
    try:
        for chunk in stream:
            for ch in chunk.choices:
                expect(ch.finish_reason is None, f"cancel: the {n_long}-token stream ended ({ch.finish_reason}) "
                                                 f"after {chunks} chunks, before it was closed")
                chunks += bool(ch.delta.content)
            if chunks >= CANCEL_AFTER_CHUNKS:
                break
    finally:
        stream.close()
    expect(chunks >= CANCEL_AFTER_CHUNKS, f"cancel: the stream ended after {chunks} chunks")
    after = wait_for(lambda: openai_cancelled(srv), lambda v: v >= before + 1)
    expect(after == before + 1, f"cancel: ziya_request_errors_total{{api=openai,kind=cancelled}} went from "
                                f"{before:g} to {after:g}, expected +1")
    active = wait_for(lambda: engine_active(srv), lambda v: not v)
    expect(not active, f"cancel: {active:g} request(s) still hold an engine slot 15 s after the stream closed")
    again = check_grpc(srv, n)[0]
    expect(again == expected, f"cancel: the chat after it answered {again!r}, before it {expected!r}")
    slots = "no active-request series to read" if active is None else "engine slots free"
    return f"closed after {chunks} chunks: counted, {slots}, the next chat answered the same"


def run_checks(srv, n_long: int, n: int = ANSWER_TOKENS, say=print) -> None:
    """Checks 1-4 against a running server (``srv``: ``grpc_url``, ``http_url``, ``metrics_url``)."""
    expected, prompt_tokens = check_grpc(srv, n)
    expect(0 < prompt_tokens < KV_BLOCK_TOKENS, f"gRPC chat: {prompt_tokens} prompt tokens; the checks compare "
                                                f"answers, which needs a prompt shorter than one KV block")
    say(f"ok  gRPC chat, whole and streamed ({prompt_tokens} prompt tokens, {n} generated): {expected!r}")
    check_http_generate(srv, n, expected)
    say("ok  HTTP generate: the same text")
    check_openai(srv, n, expected)
    say("ok  /v1/chat/completions streamed: the same text")
    say(f"ok  cancel: {check_cancel(srv, n_long, n, expected)}")


# --- the machine, the engine, the server ------------------------------------------------------------------


def preflight(a) -> str | None:
    """Why this machine cannot run the smoke test; None when it can."""
    from ziya_trt.serving.process.multi_gpu import count_visible_gpus

    installed = trtllm_version()
    if installed != TRTLLM_VERSION:
        found = "is not installed here" if installed is None else f"{installed} is installed here"
        return f"TensorRT-LLM {found}: the GPU smoke test {NEEDS}"
    gpus, needed = count_visible_gpus(), a.tp * a.pp
    if gpus < needed:
        return f"{gpus} NVIDIA GPU(s) visible (nvidia-smi -L), {needed} needed for tp {a.tp} x pp {a.pp}"
    if not Path(a.tritonserver).exists():
        return f"no tritonserver at {a.tritonserver}: pass --tritonserver PATH"
    try:
        src = find_source_tree(a.trtllm_source)
    except BuildError as e:
        return str(e)
    if src is None:
        return ("cannot find TensorRT-LLM's examples/ (/app/examples in the 26.07 container): pass "
                "--trtllm-source DIR")
    return None


def build_engine(a, ckpt: Path, dtype: str):
    from .build import run_build
    from .plan import Workload, make_plan

    plan = make_plan(ckpt, a.gpu, dtype, a.tp, a.pp, workload=Workload(isl=64, osl=4000, min_batch=4))
    expect(plan.fits, f"the tiny engine's plan does not fit {a.gpu}: {'; '.join(plan.problems)}")
    engine = a.out / f"engine-{dtype}"
    run_build(plan, engine, a.out / f"work-{dtype}", {"model": "tiny fixture (random weights)"},
              trtllm_source=a.trtllm_source)
    return plan, engine


@dataclass(frozen=True)
class Endpoints:
    """Where the served engine answers (the attributes ``run_checks`` reads, as a ``TritonServer`` has them)."""

    http_url: str
    grpc_url: str
    metrics_url: str

    @classmethod
    def on(cls, ports) -> "Endpoints":
        return cls(f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}", f"http://127.0.0.1:{ports.metrics}/metrics")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


@contextmanager
def serving(a, engine: Path, dtype: str, ready_timeout_s: float = 600.0):
    """``ziya-trt serve --engine tensorrt_llm`` for ``engine``, in a process of its own, until the block ends."""
    from ziya_trt.serving.process.server import Ports, ServerStartError

    ports = Ports.free()
    srv = Endpoints.on(ports)
    run = a.out / f"serve-{dtype}"
    run.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ziya_trt.cli", "serve", "--engine", "tensorrt_llm", "--engine-dir", str(engine),
           "--tritonserver", a.tritonserver, "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
           "--metrics-port", str(ports.metrics), "--repo-dir", str(run / "repo"),
           "--log-file", str(run / "tritonserver.log"), "--ready-timeout", str(ready_timeout_s)]
    print(f"serving: {' '.join(cmd[1:])}  (logs in {run})")
    with open(run / "serve.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_for(lambda: proc.poll() is not None or srv.is_ready(), bool, ready_timeout_s, 0.5)
        if proc.poll() is not None or not ready:
            why = (f"exited with code {proc.returncode}" if proc.poll() is not None
                   else f"is not ready after {ready_timeout_s:.0f}s")
            raise ServerStartError(f"ziya-trt serve {why}; see {run / 'serve.log'} and {run / 'tritonserver.log'}")
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # it drains, then stops tritonserver
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its session (tritonserver, its stubs)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)


def bench(srv, tok, out: Path, dtype: str) -> dict:
    """The optional perf sweep: concurrency 1 and 8, output tokens per second by load point."""
    from perf import workload
    from perf.bench import BenchConfig, run_bench
    from perf.load import LoadConfig

    points = [LoadConfig(concurrency=c, num_requests=32, warmup=2) for c in (1, 8)]
    res = run_bench(BenchConfig(url=f"grpc://{srv.grpc_url}", points=points), workload.synthetic(tok, 16, 48, 32),
                    tok, out / f"bench-{dtype}", {"smoke": dtype})
    return {p["label"]: p["summary"]["output_token_throughput"] for p in res["points"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="h100-80gb", help="the GPU to plan for (`ziya-trt plan --list-gpus`)")
    ap.add_argument("--out", type=Path, default=Path("runs/smoke"))
    ap.add_argument("--tritonserver", default="/opt/tritonserver/bin/tritonserver")
    ap.add_argument("--trtllm-source", help="the directory that holds TensorRT-LLM's examples/ (default: "
                                           "$TRTLLM_SOURCE, else /app as in the 26.07 container, and others)")
    ap.add_argument("--dtypes", default="bf16", help="comma-separated: bf16, fp8 (fp8 needs FP8 tensor cores)")
    ap.add_argument("--tp", type=int, default=1, help="tensor parallelism (the fixture has 4 heads)")
    ap.add_argument("--pp", type=int, default=1, help="pipeline parallelism (the fixture has 2 layers)")
    ap.add_argument("--bench", action="store_true", help="also run a short perf sweep against each engine")
    a = ap.parse_args(argv)
    print(f"GPU smoke test: {NEEDS}")
    why = preflight(a)
    if why:
        print(f"cannot run here: {why}", file=sys.stderr)
        return 2
    from ziya_trt.fixtures import tiny
    from ziya_trt.text.tokenizer import load_tokenizer

    a.out = a.out.resolve()
    step = "the tiny checkpoint"
    try:
        ckpt = tiny.build_checkpoint(a.out / "fixture")
        summary = {}
        for dtype in a.dtypes.split(","):
            step = f"{dtype}: building the engine"
            plan, engine = build_engine(a, ckpt, dtype)
            step = f"{dtype}: serving it"
            with serving(a, engine, dtype) as srv:
                step = f"{dtype}: the checks"
                run_checks(srv, n_long=plan.max_seq_len - plan.max_input_len)
                if a.bench:
                    step = f"{dtype}: the perf sweep"
                    summary[dtype] = bench(srv, load_tokenizer(ckpt), a.out, dtype)
            print(f"ok  {dtype}: all checks passed")
    except Exception as e:  # noqa: BLE001 - any failure ends the run with what failed, where
        kind = "" if isinstance(e, SmokeFailure) else f"{type(e).__name__}: "
        print(f"FAILED ({step}): {kind}{e}", file=sys.stderr)
        return 1
    if summary:
        print(json.dumps(summary, indent=2))
    print("GPU smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
