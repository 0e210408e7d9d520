"""``ziya-trt chat``: an interactive terminal chat against a running server.

Streams replies and keeps the history; the server formats it and drops the oldest turns that do not
fit. Has /reset, /system, /params and /exit. Ctrl-C stops the current reply (cancelling it on the
server) but not the chat.

At a terminal, lines are read with GNU readline: up and down recall earlier lines, editing knows wide
(Chinese) characters, and a pasted line is read whole (the terminal's own line discipline would cut it
at 4,095 bytes). While a reply streams, what is typed is not echoed into it; it waits for the next prompt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import typing

from ..errors import InvalidRequestError, ZiyaError
from ..finish import FinishReason
from ..text.prompt import Message, Role
from ..text.sampling import SamplingParams
from . import threads_without_ctrl_c

HELP = "commands: /reset  /system TEXT  /params [key=value ...]  /exit"


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="interactive chat with a running server")
    p.add_argument("--url", default="grpc://127.0.0.1:8001", help="grpc://host:port or http://host:port")
    p.add_argument("--model", default="ziya", help="text front door model name")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the card's sampling")
    p.add_argument("--once", metavar="QUESTION", help="answer one question and exit")
    p.set_defaults(func=run)


def parse_param(key: str, value: str):
    """One ``/params key=value``, typed by the ``SamplingParams`` field it sets."""
    types = typing.get_type_hints(SamplingParams)
    if key not in types:
        raise InvalidRequestError(f"unknown parameter {key!r}; known: {', '.join(sorted(types))}", key)
    t = types[key]
    if value.lower() == "none" and type(None) in typing.get_args(t):
        return None
    if t is bool:
        if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise InvalidRequestError(f"{key}: {value!r} is not true or false", key)
        return value.lower() in ("1", "true", "yes")
    if typing.get_origin(t) is tuple:
        return tuple(v for v in value.split(",") if v)
    base = next((a for a in typing.get_args(t) if a is not type(None)), t)
    try:
        return base(value)
    except ValueError:
        raise InvalidRequestError(f"{key}: {value!r} is not a {base.__name__}", key) from None


class ChatSession:
    def __init__(self, client, params: SamplingParams):
        self.client, self.params = client, params
        self.history: list[Message] = []
        self.system: str | None = None

    def command(self, line: str, out) -> bool:
        """Handle a /command; False means exit."""
        cmd, _, arg = line.partition(" ")
        if cmd == "/exit":
            return False
        if cmd == "/reset":
            self.history.clear()
            print("(history cleared)", file=out)
        elif cmd == "/system":
            self.system = arg.strip() or None
            print(f"(system prompt {'set' if self.system else 'cleared'})", file=out)
        elif cmd == "/params":
            try:
                changes = {}
                for kv in arg.split():
                    k, _, v = kv.partition("=")
                    changes[k] = parse_param(k, v)
                self.params = self.params.with_(**changes)
            except ZiyaError as e:
                print(f"(error: {e})", file=out)
            print(self.params.to_dict(), file=out)
        else:
            print(HELP, file=out)
        return True

    def ask(self, question: str, out) -> None:
        """Stream one reply; Ctrl-C stops it (the request is cancelled on the server) and keeps the chat."""
        messages = ([Message(Role.SYSTEM, self.system)] if self.system else []) + self.history + [Message(Role.USER, question)]
        stopped, streams = [], []

        def on_ctrl_c(signum, frame):  # instead of KeyboardInterrupt inside the transport's threads and objects
            stopped.append(True)
            for s in streams:
                s.cancel()

        parts: list[str] = []
        previous = signal.signal(signal.SIGINT, on_ctrl_c)
        try:
            try:
                with threads_without_ctrl_c():
                    streams.append(stream := self.client.stream_chat(messages, **self.params.to_dict()))
            except InvalidRequestError as e:
                self._refused(e, out)
                return
            if stopped:  # Ctrl-C before the stream was open
                stream.cancel()
            for delta in stream:
                parts.append(delta)
                out.write(delta)
                out.flush()
        except InvalidRequestError as e:
            if not stopped:
                self._refused(e, out)
                return
        except ZiyaError:
            if not stopped:
                raise
        finally:
            signal.signal(signal.SIGINT, previous)
        out.write(" [stopped]\n" if stopped else "\n")
        out.flush()
        self.history += [Message(Role.USER, question), Message(Role.ASSISTANT, "".join(parts))]
        r = stream.result
        if r is not None and r.turns_dropped:
            print(f"(the server dropped the {r.turns_dropped} oldest turn(s) to fit its input limit)", file=out)
        if r is not None and r.finish_reason is FinishReason.LENGTH:
            print(f"(cut off at max_new_tokens={self.params.max_new_tokens}; /params max_new_tokens=N for more)",
                  file=out)

    def _refused(self, e: ZiyaError, out) -> None:
        print(f"\n(error: {e})", file=out)
        if "system role" in str(e) and self.system is not None:
            self.system = None
            print("(system prompt cleared: this server's template has no system role)", file=out)


def line_editing() -> None:
    """``input()`` through GNU readline, where stdin is a terminal (importing the module is what turns it on)."""
    if sys.stdin.isatty():
        try:
            import readline
        except ImportError:  # a Python built without it: plain input() still works
            return
        readline.set_history_length(1000)


@contextlib.contextmanager
def no_echo(stream=None):
    """The terminal does not echo what is typed meanwhile (Ctrl-C still works; the typed text is kept for the next
    prompt); a no-op where ``stream`` (stdin) is not a terminal."""
    stream = stream or sys.stdin
    try:
        import termios

        fd = stream.fileno()
        if not os.isatty(fd):
            raise OSError
        old = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        yield
        return
    quiet = list(old)
    quiet[3] &= ~termios.ECHO  # lflag
    termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run(a) -> int:
    from ..client import ZiyaClient

    with threads_without_ctrl_c():
        client = ZiyaClient(a.url, model=a.model)  # the server formats the conversation and drops what does not fit
    params = SamplingParams(max_new_tokens=a.max_new_tokens, do_sample=not a.greedy)
    session = ChatSession(client, params)
    out = sys.stdout
    if a.once is not None:
        session.ask(a.once, out)
        return 0
    print(f"chatting with {a.model} at {a.url}. {HELP}", file=out)
    line_editing()
    interrupted = False
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            if interrupted:
                print(file=out)
                return 0
            interrupted = True
            print("\n(Ctrl-C again or /exit to quit)", file=out)
            continue
        interrupted = False
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line, out):
                return 0
            continue
        out.write("bot> ")
        try:
            with no_echo():
                session.ask(line, out)
        except ZiyaError as e:
            print(f"\n(error: {e})", file=out)
