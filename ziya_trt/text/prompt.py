"""Conversations, prompt templates and history truncation.

The Ziya2-13B-Chat card's format is ``<human>:{q}\n<bot>:{a}``, turns joined by ``\n``, ending
``<bot>:`` for the reply to come. Truncation drops the oldest whole turns; it never cuts a turn in
half and never drops the last user turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Protocol, Sequence

from ..errors import InvalidRequestError, PromptTooLongError


class Role(str, Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "role", Role(self.role))
        except ValueError:
            raise InvalidRequestError(
                f"messages: unknown role {self.role!r}; use system, user or assistant", "messages"
            ) from None
        if not isinstance(self.content, str):
            raise InvalidRequestError("messages: content must be text", "messages")


def user(text: str) -> Message:
    return Message(Role.USER, text)


def assistant(text: str) -> Message:
    return Message(Role.ASSISTANT, text)


def parse_messages(obj) -> list[Message]:
    """Messages from JSON text or a list of ``{"role", "content"}`` dicts, with clear errors."""
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidRequestError(f"messages: not valid JSON ({e})", "messages") from None
    if not isinstance(obj, list) or not all(isinstance(m, (dict, Message)) for m in obj):
        raise InvalidRequestError("messages: expected a list of {role, content} objects", "messages")
    out = []
    for m in obj:
        if isinstance(m, Message):
            out.append(m)
        elif set(m) >= {"role", "content"}:
            out.append(Message(m["role"], m["content"]))
        else:
            raise InvalidRequestError("messages: every message needs 'role' and 'content'", "messages")
    return out


@dataclass(frozen=True)
class Conversation:
    """A validated conversation: optional system message, then user/assistant turns, last is user."""

    system: str | None
    turns: tuple[tuple[str, str | None], ...]  # (user, assistant); the last assistant is None

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> "Conversation":
        msgs = list(messages)
        system = None
        if msgs and msgs[0].role is Role.SYSTEM:
            system = msgs.pop(0).content
        if not msgs or msgs[-1].role is not Role.USER:
            raise InvalidRequestError("messages: the conversation must end with a user message", "messages")
        turns: list[tuple[str, str | None]] = []
        for i in range(0, len(msgs), 2):
            u = msgs[i]
            a = msgs[i + 1] if i + 1 < len(msgs) else None
            if u.role is not Role.USER or (a is not None and a.role is not Role.ASSISTANT):
                raise InvalidRequestError(
                    "messages: roles must alternate user, assistant, user, ... after an optional system message",
                    "messages",
                )
            turns.append((u.content, a.content if a else None))
        if not turns[-1][0].strip():
            raise InvalidRequestError("messages: the last user message is empty", "messages")
        return cls(system, tuple(turns))

    def last_turns(self, k: int) -> "Conversation":
        return Conversation(self.system, self.turns[len(self.turns) - k :])

    def to_messages(self) -> list[Message]:
        out = [Message(Role.SYSTEM, self.system)] if self.system is not None else []
        for u, a in self.turns:
            out.append(user(u))
            if a is not None:
                out.append(assistant(a))
        return out


class PromptTemplate(Protocol):
    name: str
    supports_system: bool
    stop_strings: tuple[str, ...]

    def render(self, conv: Conversation) -> str: ...


class ZiyaTemplate:
    """Ziya2-13B-Chat's format. Ziya2 has no system role: a system message is refused."""

    name = "ziya"
    supports_system = False
    stop_strings = ("<human>:",)

    def render(self, conv: Conversation) -> str:
        if conv.system is not None:
            raise InvalidRequestError("messages: the ziya template has no system role", "messages")
        parts = []
        for u, a in conv.turns:
            parts.append(f"<human>:{u}\n<bot>:" + ("" if a is None else a))
        return "\n".join(parts)


class ChatTemplate:
    """The tokenizer's own Jinja chat template (e.g. ChatML), with the generation prompt added."""

    name = "chat_template"
    supports_system = True
    stop_strings: tuple[str, ...] = ()

    def __init__(self, hf_tokenizer):
        if not getattr(hf_tokenizer, "chat_template", None):
            raise InvalidRequestError("template: this tokenizer has no chat_template", "template")
        self.hf = hf_tokenizer

    def render(self, conv: Conversation) -> str:
        msgs = [{"role": m.role.value, "content": m.content} for m in conv.to_messages()]
        return self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


TEMPLATES: dict[str, Callable[..., PromptTemplate]] = {
    "ziya": lambda tokenizer=None: ZiyaTemplate(),
    "chat_template": lambda tokenizer=None: ChatTemplate(tokenizer.hf if hasattr(tokenizer, "hf") else tokenizer),
}


def get_template(name: str, tokenizer=None) -> PromptTemplate:
    try:
        factory = TEMPLATES[name]
    except KeyError:
        raise InvalidRequestError(
            f"template: unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}", "template"
        ) from None
    return factory(tokenizer)


@dataclass(frozen=True)
class Prompt:
    text: str
    n_tokens: int
    turns_kept: int
    turns_dropped: int


def build_prompt(
    messages: Conversation | Iterable[Message],
    template: PromptTemplate,
    count_tokens: Callable[[str], int],
    budget: int | None = None,
) -> Prompt:
    """Render, dropping the oldest whole turns until the prompt fits ``budget`` tokens."""
    conv = messages if isinstance(messages, Conversation) else Conversation.from_messages(list(messages))
    total = len(conv.turns)
    if budget is None:
        text = template.render(conv)
        return Prompt(text, count_tokens(text), total, 0)
    # fewest dropped turns that fits: token counts grow with kept turns, so binary search
    lo, hi = 1, total  # number of turns kept; 1 always keeps the last user turn
    fits: tuple[str, int] | None = None
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        text = template.render(conv.last_turns(mid))
        n = count_tokens(text)
        if n <= budget:
            fits, best, lo = (text, n), mid, mid + 1
        else:
            hi = mid - 1
    if fits is None:
        text = template.render(conv.last_turns(1))
        raise PromptTooLongError(count_tokens(text), budget, what="the last user turn")
    return Prompt(fits[0], fits[1], best, total - best)
