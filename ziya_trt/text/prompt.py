"""Conversations, prompt templates, safe encoding and history truncation.

The Ziya2-13B-Chat card's format is ``<human>:{q}\n<bot>:{a}``, turns joined by ``\n``, ending
``<bot>:`` for the reply to come. A template renders a conversation as parts, each template text or
message content, so that ``encode_prompt`` can turn it into ids where the role markers are the
template's and nothing a user wrote can become a marker, special or control token
(``ZiyaTokenizer.encode_protected``). Truncation drops the oldest whole turns; it never cuts a turn
in half and never drops the last user turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Protocol, Sequence

from ..errors import InvalidRequestError, PromptTooLongError
from .unicode import refuse_surrogates


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
        refuse_surrogates(obj, "messages")
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
    """A validated conversation: optional system message, then user/assistant turns, last is user; or, with
    ``prefill``, last is the start of the assistant's answer, which the model continues (vLLM's
    ``continue_final_message``): the prompt ends with that partial content, no end of turn after it."""

    system: str | None
    turns: tuple[tuple[str, str | None], ...]  # (user, assistant); the last assistant is None, or the prefill
    prefill: bool = False

    @classmethod
    def from_messages(cls, messages: Sequence[Message], prefill: bool = False) -> "Conversation":
        """``prefill``: the last message is the assistant's partial answer, to continue (it must be an assistant's)."""
        msgs = list(messages)
        system = None
        if msgs and msgs[0].role is Role.SYSTEM:
            system = msgs.pop(0).content
        want = Role.ASSISTANT if prefill else Role.USER
        if not msgs or msgs[-1].role is not want:
            raise InvalidRequestError(f"messages: the conversation must end with {'an assistant' if prefill else 'a user'}"
                                      " message" + (" (the answer to continue)" if prefill else ""), "messages")
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
        return cls(system, tuple(turns), prefill)

    def last_turns(self, k: int) -> "Conversation":
        return Conversation(self.system, self.turns[len(self.turns) - k :], self.prefill)

    def to_messages(self) -> list[Message]:
        out = [Message(Role.SYSTEM, self.system)] if self.system is not None else []
        for u, a in self.turns:
            out.append(user(u))
            if a is not None:
                out.append(assistant(a))
        return out


Part = tuple[str, bool]  # (text, is message content)


class PromptTemplate(Protocol):
    name: str
    supports_system: bool
    stop_strings: tuple[str, ...]

    def render_parts(self, conv: Conversation) -> list[Part]: ...

    @classmethod
    def from_tokenizer(cls, tokenizer=None) -> "PromptTemplate": ...


def render(template: PromptTemplate, conv: Conversation) -> str:
    return "".join(t for t, _ in template.render_parts(conv))


class ZiyaTemplate:
    """Ziya2-13B-Chat's format. Ziya2 has no system role: a system message is refused."""

    name = "ziya"
    supports_system = False
    stop_strings = ("<human>:",)

    @classmethod
    def from_tokenizer(cls, tokenizer=None) -> "ZiyaTemplate":
        return cls()

    def render_parts(self, conv: Conversation) -> list[Part]:
        """A prefill (the last turn's assistant content) ends the prompt: ``<bot>:`` and that content, no turn after."""
        if conv.system is not None:
            raise InvalidRequestError("messages: the ziya template has no system role", "messages")
        parts: list[Part] = []
        for k, (u, a) in enumerate(conv.turns):
            parts += [("\n<human>:" if k else "<human>:", False), (u, True), ("\n<bot>:", False)]
            if a is not None:
                parts.append((a, True))
        return parts

    def render(self, conv: Conversation) -> str:
        return render(self, conv)


_SLOT = re.compile("\ue000(\\d+)\ue001")  # private-use characters: where message i's content goes


class ChatTemplate:
    """The tokenizer's own Jinja chat template (e.g. ChatML), with the generation prompt added.

    It is rendered once with a placeholder for each message's content, to know which characters are the
    template's and which the messages'; a template that does not insert content verbatim is refused."""

    name = "chat_template"
    supports_system = True
    stop_strings: tuple[str, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ChatTemplate":
        return cls(getattr(tokenizer, "hf", tokenizer))  # a ZiyaTokenizer or a transformers tokenizer

    def __init__(self, hf_tokenizer):
        if not getattr(hf_tokenizer, "chat_template", None):
            raise InvalidRequestError("template: this tokenizer has no chat_template", "template")
        self.hf = hf_tokenizer
        probe = Conversation(None, ((" a\n ", " b "), (" c ", None)))
        if render(self, probe) != self._jinja(probe.to_messages()):
            raise InvalidRequestError("template: this chat_template changes message content (e.g. trims it), so "
                                      "content cannot be kept apart from the template's own tokens", "template")

    def _jinja(self, messages: list[Message], prefill: bool = False) -> str:
        """With ``prefill``, transformers' ``continue_final_message``: the text ends with the last (assistant)
        message's content, neither its end of turn nor a generation prompt after it."""
        msgs = [{"role": m.role.value, "content": m.content} for m in messages]
        if prefill:
            return self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False,
                                               continue_final_message=True)
        return self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def render_parts(self, conv: Conversation) -> list[Part]:
        messages = conv.to_messages()
        slots = [Message(m.role, f"\ue000{i}\ue001") for i, m in enumerate(messages)]
        parts: list[Part] = []
        pos, text = 0, self._jinja(slots, conv.prefill)
        for m in _SLOT.finditer(text):
            parts += [(text[pos : m.start()], False), (messages[int(m.group(1))].content, True)]
            pos = m.end()
        parts.append((text[pos:], False))
        return [p for p in parts if p[0]]

    def render(self, conv: Conversation) -> str:
        return render(self, conv)


TEMPLATES: dict[str, type] = {"ziya": ZiyaTemplate, "chat_template": ChatTemplate}


def template_class(name: str) -> type:
    """A template's class: what it supports (``supports_system``, ``stop_strings``) before a tokenizer is at hand."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise InvalidRequestError(
            f"template: unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}", "template"
        ) from None


def get_template(name: str, tokenizer=None) -> PromptTemplate:
    return template_class(name).from_tokenizer(tokenizer)


@dataclass(frozen=True)
class Prompt:
    text: str
    n_tokens: int
    turns_kept: int
    turns_dropped: int
    ids: tuple[int, ...] | None = None  # from encode_prompt


def _conversation(messages) -> Conversation:
    return messages if isinstance(messages, Conversation) else Conversation.from_messages(list(messages))


def _fit(conv: Conversation, measure: Callable[[Conversation], tuple[str, int, tuple | None]],
         budget: int | None, max_kept: int | None = None) -> Prompt:
    """The most recent whole turns that fit ``budget`` tokens (all of them without a budget); ``max_kept``: no more
    turns than that can fit (what ``measure`` then tokenises is bounded by the budget, not by the request)."""
    total = len(conv.turns)
    if budget is None:
        text, n, ids = measure(conv)
        return Prompt(text, n, total, 0, ids)
    # fewest dropped turns that fits: token counts grow with kept turns, so binary search
    lo, hi = 1, min(total, max_kept or total)  # number of turns kept; 1 always keeps the last user turn
    fits: tuple[str, int, tuple | None] | None = None
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        m = measure(conv.last_turns(mid))
        if m[1] <= budget:
            fits, best, lo = m, mid, mid + 1
        else:
            hi = mid - 1
    if fits is None:
        raise PromptTooLongError(measure(conv.last_turns(1))[1], budget, what="the last user turn", field="messages")
    return Prompt(fits[0], fits[1], best, total - best, fits[2])


def build_prompt(messages: Conversation | Iterable[Message], template: PromptTemplate,
                 count_tokens: Callable[[str], int], budget: int | None = None) -> Prompt:
    """Render, dropping the oldest whole turns until the prompt fits ``budget`` tokens as counted."""

    def measure(c: Conversation):
        text = render(template, c)
        return text, count_tokens(text), None

    return _fit(_conversation(messages), measure, budget)


def encode_prompt(messages: Conversation | Iterable[Message], template: PromptTemplate, tokenizer,
                  budget: int | None = None) -> Prompt:
    """The conversation as ids (``Prompt.ids``), the template's markers as their tokens and the messages'
    content never as a marker, special or control token; oldest whole turns dropped to fit ``budget``."""

    def measure(c: Conversation):
        text, spans, pos = [], [], 0
        for part, is_content in template.render_parts(c):
            if is_content:
                spans.append((pos, pos + len(part)))
            text.append(part)
            pos += len(part)
        joined = "".join(text)
        ids = tuple(tokenizer.encode_protected(joined, spans))
        return joined, len(ids), ids

    conv = _conversation(messages)
    table = getattr(tokenizer, "table", None)
    max_kept = _turns_within(conv, budget * table.max_chars) if budget is not None and table is not None else None
    return _fit(conv, measure, budget, max_kept)


def _turns_within(conv: Conversation, max_chars: int) -> int:
    """How many of the last turns hold at most ``max_chars`` characters of content (at least 1). No token covers more
    than the tokenizer's longest piece, so turns beyond that many characters cannot fit the budget: a conversation of
    any length costs a tokenising bounded by the budget."""
    n, chars = 0, len(conv.system or "")
    for u, a in reversed(conv.turns):
        chars += len(u) + len(a or "")
        if chars > max_chars:
            break
        n += 1
    return max(n, 1)
