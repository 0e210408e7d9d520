"""When a part of the server dies, or the server is told to stop: open streams get a typed error at once,
readiness tells the truth, the service comes back by itself, and shutdown drains cleanly, after any load."""

import asyncio
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.triton_helpers import wait_metric
from ziya_trt import errors as E
from ziya_trt.client import AsyncZiyaClient, ZiyaClient
from ziya_trt.serving.config import ServeConfig
from ziya_trt.serving.triton.gauges import METRIC_QUEUED
from ziya_trt.serving.process.serve_process import ServeProcess
from ziya_trt.serving.process.server import TritonServer
from ziya_trt.serving.process.procs import python_stubs
from ziya_trt.serving.repo import render_repo

pytestmark = pytest.mark.server


def config(tiny_ckpt, **kw):
    return ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, max_input_len=256, max_seq_len=2048,
                       **({"max_batch_size": 32, "max_queue_size": 8, "synthetic_tokens_per_s": 20.0,
                           "drain_timeout_s": 3.0, "supervisor": {"exit_timeout_s": 10}} | kw))


def start(tmp_path, cfg, name="srv"):
    return TritonServer(render_repo(cfg, tmp_path / name / "repo"), log_file=tmp_path / name / "log",
                        serve_config=cfg).start()


def ready_status(srv) -> int:
    try:
        with urllib.request.urlopen(f"http://{srv.http_url}/v2/health/ready", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def streams(url, n, tokens=400):
    """n long streams on threads; returns (threads, outcomes {i: ('completed', reason) | ('error', class)})."""
    outcomes, started = {}, threading.Barrier(n + 1, timeout=30)

    def one(i):
        c = ZiyaClient(url, connect_retries=0, timeout_s=60)
        try:
            s = c.generate(f"stream {i} alpha bravo charlie", stream=True, max_new_tokens=tokens)
            it = iter(s)
            next(it)
            started.wait()
            list(it)
            outcomes[i] = ("completed", s.result.finish_reason.value)
        except E.ZiyaError as e:
            outcomes[i] = ("error", type(e).__name__)
        except threading.BrokenBarrierError:
            outcomes[i] = ("error", "never started")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    started.wait()
    return threads, outcomes


@pytest.mark.parametrize("model", ["synthetic", "ziya"])
def test_a_killed_stub_errors_open_streams_at_once_and_the_server_comes_back(tmp_path, tiny_ckpt, model):
    srv = start(tmp_path, config(tiny_ckpt))
    try:
        threads, outcomes = streams(f"grpc://{srv.grpc_url}", 10)
        victim = next(pid for pid, m in python_stubs(srv.proc.pid).items() if m == model)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        seen_down = False
        while time.monotonic() - t0 < 10 and not seen_down:
            seen_down = ready_status(srv) != 200
            time.sleep(0.05)
        [t.join(30) for t in threads]
        took = time.monotonic() - t0
        assert seen_down, "readiness kept answering 200 with a dead stub"
        assert len(outcomes) == 10 and all(o[0] == "error" for o in outcomes.values()), outcomes
        assert took < 15, f"open streams took {took:.1f}s to end"
        deadline = time.monotonic() + 90
        while ready_status(srv) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready_status(srv) == 200 and srv.restarts
        assert ZiyaClient(f"grpc://{srv.grpc_url}").generate("back again", max_new_tokens=3).completion_tokens == 3
        print(f"\nkilled the {model} stub: 10 streams ended with errors in {took:.1f}s; "
              f"ready again {time.monotonic() - t0:.1f}s after the kill")
    finally:
        t0 = time.monotonic()
        srv.stop()
    assert time.monotonic() - t0 < 15
    assert not list(Path("/dev/shm").glob(f"{srv.shm_prefix}*")), "shared memory left behind"


def test_sigterm_after_load_with_clients_that_cancel_finished_streams(tmp_path, tiny_ckpt):
    """An asyncio client that cancels each call right after its final response used to keep the front door
    loaded until tritonserver's exit timeout; the server now drains and stops in seconds."""
    import tritonclient.grpc.aio as tga

    srv = start(tmp_path, config(tiny_ckpt, synthetic_tokens_per_s=500.0))
    from tests.triton_helpers import grpc_inputs

    async def careless(i):
        c = tga.InferenceServerClient(srv.grpc_url)
        inputs = grpc_inputs({"text_input": f"load {i}", "max_tokens": 8})

        async def one():
            yield {"model_name": "ziya", "inputs": inputs, "request_id": str(i), "enable_empty_final_response": True}

        it = c.stream_infer(one())
        async for result, error in it:
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
        it.cancel()  # the careless part
        await c.close()

    async def load():
        sem = asyncio.Semaphore(4)

        async def bounded(i):
            async with sem:
                await careless(i)
        await asyncio.gather(*[bounded(i) for i in range(40)])

    asyncio.run(load())
    asyncio.run(_bench_like(srv))
    t0 = time.monotonic()
    srv.stop()
    took = time.monotonic() - t0
    assert srv.drained and took < 8, (srv.drained, took)  # tritonserver's own exit timeout here is 10 s
    print(f"\nSIGTERM after 80 requests (half from cancelling clients): drained and stopped in {took:.1f}s")


async def _bench_like(srv):
    sem = asyncio.Semaphore(4)
    async with AsyncZiyaClient(f"grpc://{srv.grpc_url}") as c:
        async def one(i):
            async with sem:
                await c.generate(f"bench {i}", max_new_tokens=8)
        await asyncio.gather(*[one(i) for i in range(40)])


def test_sigterm_with_20_long_streams_drains_them_or_ends_them_typed_and_exits_0(tmp_path, tiny_ckpt):
    """``ziya-trt serve`` itself, in its own process: SIGTERM with gRPC and HTTP streams open that cannot finish
    within the 3 s drain timeout. Each gets a typed shutting_down error (none is cut off), the exit code is 0."""
    cfg = config(tiny_ckpt)
    with ServeProcess(cfg, tmp_path / "serve") as sp:
        g_threads, g = streams(f"grpc://{sp.grpc_url}", 10)
        h_threads, h = streams(f"http://{sp.http_url}", 10)
        short_threads, short = streams(f"grpc://{sp.grpc_url}", 4, tokens=30)  # these finish within the drain
        t0 = time.monotonic()
        sp.proc.send_signal(signal.SIGTERM)
        rc = sp.proc.wait(40)
        took = time.monotonic() - t0
        [t.join(30) for t in g_threads + h_threads + short_threads]
    assert rc == 0, f"ziya-trt serve exited {rc}; see {sp.log_file}"
    long_ones = list(g.values()) + list(h.values())
    assert len(long_ones) == 20 and all(o == ("error", "ServerShuttingDownError") for o in long_ones), long_ones
    assert all(o == ("completed", "length") for o in short.values()), short
    assert took < cfg.drain_timeout_s + 12
    print(f"\nSIGTERM with 20 long streams + 4 short: 4 completed, 20 ended shutting_down, exit 0 in {took:.1f}s")


def test_cancelled_queued_requests_give_their_places_back_at_once(tmp_path, tiny_ckpt):
    """2 slots held by long streams, 1 place in the queue: a request cancelled while queued must not hold its
    place until it reaches a slot (a churn of such cancels once made false overload refusals)."""
    srv = start(tmp_path, config(tiny_ckpt, max_batch_size=2, max_queue_size=1))
    try:
        threads, _ = streams(f"grpc://{srv.grpc_url}", 2, tokens=2000)
        c = ZiyaClient(f"grpc://{srv.grpc_url}", connect_retries=0)
        for i in range(8):
            s = c.generate(f"queued {i}", stream=True, max_new_tokens=5)
            v, _ = wait_metric(srv, METRIC_QUEUED, "synthetic", lambda v: v == 1)
            assert v == 1, f"round {i}: the request was refused or lost instead of queued"
            s.cancel()
            v, waited = wait_metric(srv, METRIC_QUEUED, "synthetic", lambda v: v == 0)
            assert v == 0, f"round {i}: the cancelled request kept its place"
    finally:
        srv.stop()
