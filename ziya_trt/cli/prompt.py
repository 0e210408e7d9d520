"""``ziya-trt prompt``: a conversation as the front door encodes it: template, safe encoding, truncation."""

from __future__ import annotations

import json
import sys

from ..text.prompt import encode_prompt, get_template, parse_messages


def add_parser(sub) -> None:
    p = sub.add_parser("prompt", help="render a conversation as the server does, and show its token ids")
    p.add_argument("messages", help="JSON list of {role, content}, or '-' to read it from stdin")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the tiny offline fixture)")
    p.add_argument("--template", default="ziya", help="ziya (default) or chat_template")
    p.add_argument("--budget", type=int, help="token budget; oldest whole turns are dropped to fit")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..fixtures.tiny import fixture_checkpoint
    from ..text.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer or fixture_checkpoint(), require_chat_tokens=args.template == "ziya")
    raw = sys.stdin.read() if args.messages == "-" else args.messages
    prompt = encode_prompt(parse_messages(raw), get_template(args.template, tok), tok, args.budget)
    json.dump(
        {
            "prompt": prompt.text,
            "n_tokens": prompt.n_tokens,
            "turns_kept": prompt.turns_kept,
            "turns_dropped": prompt.turns_dropped,
            "input_ids": list(prompt.ids),
        },
        sys.stdout,
        ensure_ascii=False,
        indent=2,
    )
    print()
    return 0
