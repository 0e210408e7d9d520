"""``ziya-trt chat``: an interactive terminal chat against a running server.

Streams replies and keeps the history; the server formats it and drops the oldest turns that do not
fit. Has /reset, /system, /params and /exit. Ctrl-C stops the current reply (cancelling it on the
server) but not the chat.
"""

from __future__ import annotations

import sys

from ..errors import InvalidRequestError, ZiyaError
from ..text.prompt import Message, Role, template_class
from ..text.sampling import SamplingParams

HELP = "commands: /reset  /system TEXT  /params [key=value ...]  /exit"


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="interactive chat with a running server")
    p.add_argument("--url", default="grpc://127.0.0.1:8001", help="grpc://host:port or http://host:port")
    p.add_argument("--model", default="ziya", help="text front door model name")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the card's sampling")
    p.add_argument("--once", metavar="QUESTION", help="answer one question and exit")
    p.set_defaults(func=run)


class ChatSession:
    def __init__(self, client, params: SamplingParams, supports_system: bool):
        self.client, self.params, self.supports_system = client, params, supports_system
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
            if not self.supports_system:
                print("(this template has no system role)", file=out)
            else:
                self.system = arg.strip() or None
                print(f"(system prompt {'set' if self.system else 'cleared'})", file=out)
        elif cmd == "/params":
            try:
                changes = {}
                for kv in arg.split():
                    k, _, v = kv.partition("=")
                    cur = getattr(self.params, k, None)
                    if cur is None and k not in ("seed",):
                        raise InvalidRequestError(f"unknown parameter {k!r}", k)
                    changes[k] = (v.lower() in ("1", "true", "yes")) if isinstance(cur, bool) else type(cur or 0)(v)
                self.params = self.params.with_(**changes)
            except (ValueError, ZiyaError) as e:
                print(f"(error: {e})", file=out)
            print(self.params.to_dict(), file=out)
        else:
            print(HELP, file=out)
        return True

    def ask(self, question: str, out) -> None:
        messages = ([Message(Role.SYSTEM, self.system)] if self.system else []) + self.history + [Message(Role.USER, question)]
        stream = self.client.stream_chat(messages, **self.params.to_dict())
        parts: list[str] = []
        try:
            for delta in stream:
                parts.append(delta)
                out.write(delta)
                out.flush()
        except KeyboardInterrupt:
            stream.cancel()
            out.write(" [stopped]")
        out.write("\n")
        out.flush()
        self.history += [Message(Role.USER, question), Message(Role.ASSISTANT, "".join(parts))]
        r = stream.result
        if r is not None and r.turns_dropped:
            print(f"(dropped {r.turns_dropped} oldest turn(s) to fit the input limit)", file=out)


def run(a) -> int:
    from ..client import ZiyaClient, server_params

    # the server formats the conversation and drops the oldest turns to fit; it says which template it uses
    template = server_params(a.url, a.model).get("template", "ziya")
    client = ZiyaClient(a.url, model=a.model)
    params = SamplingParams(max_new_tokens=a.max_new_tokens, do_sample=not a.greedy)
    session = ChatSession(client, params, supports_system=template_class(template).supports_system)
    out = sys.stdout
    if a.once is not None:
        session.ask(a.once, out)
        return 0
    print(f"chatting with {a.model} at {a.url} ({template} template). {HELP}", file=out)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print("\n(Ctrl-C again or /exit to quit)", file=out)
            continue
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line, out):
                return 0
            continue
        out.write("bot> ")
        try:
            session.ask(line, out)
        except ZiyaError as e:
            print(f"\n(error: {e})", file=out)
