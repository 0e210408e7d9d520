"""The ``ziya-trt`` command. Each subcommand lives in its own module and only builds typed configs."""

from __future__ import annotations

import argparse
import importlib
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
}


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
    parser = build_parser()
    args = parser.parse_args(argv)
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
