"""OpenAI's ``logprobs`` objects, from a session's (token id, log probability) pairs (``TextSession.logprobs``).

- Chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": []}], "refusal": null}``.
- Completions: ``{"tokens", "token_logprobs", "top_logprobs": null, "text_offset"}``; each token's offset is where it
  starts in the concatenation of the response's token strings (vLLM's reckoning), counted on across stream chunks.

A token's string and bytes are the tokenizer's (``TokenTable.token_bytes``): a word piece's text with its leading
space, one raw byte for a byte-fallback piece. Bytes that are not whole UTF-8 make the string ``bytes:\\xNN``, as
OpenAI writes such tokens. Only the sampled token's log probability exists (contracts/log-probs.json): the
alternatives are empty (chat) or null (completions).
"""

from __future__ import annotations

from ....text.detok import TokenTable


def token_string(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{c:02x}" for c in b)


class LogprobsFormat:
    """The ``logprobs`` of one response's choice, chunk by chunk or whole."""

    __slots__ = ("table", "chat", "offset")

    def __init__(self, table: TokenTable, chat: bool):
        self.table, self.chat = table, chat
        self.offset = 0  # completions: where the next token starts

    def __call__(self, pairs: list[tuple[int, float]]) -> dict:
        raw = [self.table.token_bytes(t) for t, _ in pairs]
        strings = [token_string(b) for b in raw]
        if self.chat:
            content = [{"token": s, "logprob": lp, "bytes": list(b), "top_logprobs": []}
                       for s, b, (_, lp) in zip(strings, raw, pairs)]
            return {"content": content, "refusal": None}
        offsets = []
        for s in strings:
            offsets.append(self.offset)
            self.offset += len(s)
        return {"tokens": strings, "token_logprobs": [lp for _, lp in pairs], "top_logprobs": None,
                "text_offset": offsets}
