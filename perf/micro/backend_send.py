"""How much stub CPU one Python-backend response costs, hot (back to back) and cold (20 ms apart, as one stream's
tokens at 50 tok/s are). Runs a real tritonserver with one tiny model (``backend_send_repo/``)::

    python -m perf.micro.backend_send [--runs 4] [--sends 3000]

Prints a table and writes nothing else; each figure is the stub's own ``process_time`` per send, so it includes
whatever its other threads did meanwhile (nothing, in this model).
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import tempfile
from pathlib import Path

import numpy as np

CASES = (("back to back, model thread", 0, 0.0), ("back to back, another thread", 1, 0.0),
         ("20 ms apart, model thread", 0, 20.0), ("20 ms apart, another thread", 1, 20.0))


def one(client, q, n: int, mode: int, gap_ms: float) -> list[float]:
    import tritonclient.grpc as g

    ins = [g.InferInput("N", [1], "INT32"), g.InferInput("MODE", [1], "INT32"), g.InferInput("GAP_MS", [1], "FP32")]
    ins[0].set_data_from_numpy(np.array([n], np.int32))
    ins[1].set_data_from_numpy(np.array([mode], np.int32))
    ins[2].set_data_from_numpy(np.array([gap_ms], np.float32))
    client.async_stream_infer("sendbench", ins)
    while True:
        result, error = q.get(timeout=300)
        if error is not None:
            raise RuntimeError(str(error))
        stats = result.as_numpy("stats")
        if stats is not None:
            return [float(x) for x in stats]


def main(argv=None) -> int:
    import tritonclient.grpc as g

    from ziya_trt.serving.limits import HttpLimits
    from ziya_trt.serving.process.server import TritonServer, bundled_triton

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--sends", type=int, default=3000, help="back to back; 20 ms apart sends a tenth of it")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(Path(__file__).parent / "backend_send_repo", repo)
        with TritonServer(repo, install=bundled_triton(), http_limits=HttpLimits(max_body_bytes=0),
                          supervise=False) as srv:
            client, q = g.InferenceServerClient(srv.grpc_url), queue.Queue()
            client.start_stream(lambda result, error: q.put((result, error)))
            got: dict[str, list[list[float]]] = {name: [] for name, _, _ in CASES}
            for _ in range(args.runs):  # the cases interleaved, so drift falls on all of them
                for name, mode, gap in CASES:
                    got[name].append(one(client, q, args.sends if not gap else max(1, args.sends // 10), mode, gap))
            client.stop_stream()
    print(f"{'case':32s} {'stub CPU µs/send':>18s} {'wall µs/send':>14s} {'vol. ctx sw./send':>18s}")
    for name, runs in got.items():
        cpu, wall, cs = zip(*runs)
        print(f"{name:32s} {min(cpu):8.1f}–{max(cpu):<8.1f} {min(wall):6.1f}–{max(wall):<6.1f} "
              f"{min(cs):8.2f}–{max(cs):<8.2f}")
    print(json.dumps({name: runs for name, runs in got.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
