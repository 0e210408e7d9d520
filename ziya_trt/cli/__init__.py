"""The ``ziya-trt`` command. Each subcommand lives in its own module and only builds typed configs."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys

from ..errors import ZiyaError

# name -> module with ``add_parser(subparsers)`` (or ``add_parsers`` for several) setting ``func``
SUBCOMMANDS = {
    "fetch": "engine_build.cli",
    "validate": "engine_build.cli",
    "plan": "engine_build.cli",
    "build": "engine_build.cli",
    "demo": "ziya_trt.cli.demo",
    "prompt": "ziya_trt.cli.prompt",
    "serve": "ziya_trt.cli.serve",
    "chat": "ziya_trt.cli.chat",
    "bench": "perf.cli",
    "deploy": "ziya_trt.cli.deploy",
    "eval": "ziya_trt.cli.eval",
}


@contextlib.contextmanager
def threads_without_ctrl_c():
    """Threads started in here (a library's pool at import, gRPC's and the client's), and the threads they
    start, block SIGINT: a Ctrl-C sent to the process then always lands on the main thread. Landing on
    another, it only sets Python's flag, which a main thread asleep in ``input()`` or a read does not see."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ziya-trt",
        description="Serve Ziya2-13B-Chat with TensorRT-LLM and Triton, talk to it, and measure it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in dict.fromkeys(SUBCOMMANDS.values()):
        m = importlib.import_module(module)
        (m.add_parsers if hasattr(m, "add_parsers") else m.add_parser)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    with threads_without_ctrl_c():  # the subcommands' imports start native threads (a BLAS pool)
        parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for the results that record it
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ZiyaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
