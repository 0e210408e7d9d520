"""Incremental detokenisation and stopping.

Each token id maps (through a table built once per tokenizer) to either text, raw bytes, or
nothing (control tokens). Raw bytes from byte-fallback pieces go through a small UTF-8 decoder that
holds back an incomplete character and replaces each invalid byte with U+FFFD, exactly as
sentencepiece's own ``decode`` does. Work per token is O(1): nothing is ever re-decoded.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import cached_property
from enum import Enum
from typing import Iterable, Sequence

from ..finish import FinishReason, reason_at_end

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
REPLACEMENT = "\ufffd"


class ByteMode(str, Enum):
    PER_BYTE = "per_byte"  # sentencepiece: one U+FFFD per invalid byte
    MAXIMAL_SUBPART = "maximal_subpart"  # byte-level BPE (Rust from_utf8_lossy, Python 'replace')


@dataclass(frozen=True)
class TokenTable:
    """What each token id contributes to the text. Built once per tokenizer."""

    texts: tuple[str | None, ...]  # text of a text piece, else None
    raw: tuple[bytes | None, ...]  # bytes of a byte piece, else None
    strip_leading_space: bool  # sentencepiece's dummy prefix: drop the first piece's leading space
    byte_mode: ByteMode = ByteMode.PER_BYTE
    keep_space_ids: frozenset[int] = frozenset()  # pieces whose leading space is never stripped (unk)

    @cached_property
    def max_chars(self) -> int:
        """The most characters one token contributes (a byte piece: at most one)."""
        return max((len(t) for t in self.texts if t), default=1)

    @classmethod
    def from_pieces(
        cls,
        pieces: Sequence[str],
        skip_ids: Iterable[int] = (),
        literal_ids: Iterable[int] = (),
        unk_id: int | None = None,
        strip_leading_space: bool = True,
    ) -> "TokenTable":
        """A sentencepiece-style vocabulary: ``▁`` is a space, ``<0xNN>`` is one raw byte."""
        skip, literal = set(skip_ids), set(literal_ids)
        texts: list[str | None] = []
        raw: list[bytes | None] = []
        for i, p in enumerate(pieces):
            m = _BYTE_PIECE.match(p)
            if i in skip:
                texts.append(None), raw.append(None)
            elif i == unk_id:
                texts.append(" \u2047 "), raw.append(None)  # sentencepiece renders <unk> as " ⁇ "
            elif m and i not in literal:
                texts.append(None), raw.append(bytes([int(m.group(1), 16)]))
            else:
                texts.append(p if i in literal else p.replace("\u2581", " ")), raw.append(None)
        keep = frozenset({unk_id} if unk_id is not None else ())
        return cls(tuple(texts), tuple(raw), strip_leading_space, ByteMode.PER_BYTE, keep)

    @classmethod
    def from_byte_level(cls, pieces: Sequence[str], skip_ids: Iterable[int] = (), literal_ids=()) -> "TokenTable":
        """A GPT-2 style byte-level BPE vocabulary (every piece is bytes in the printable alphabet)."""
        inv = {c: b for b, c in _bytes_to_unicode().items()}
        skip, literal = set(skip_ids), set(literal_ids)
        texts: list[str | None] = []
        raw: list[bytes | None] = []
        for i, p in enumerate(pieces):
            if i in skip:
                texts.append(None), raw.append(None)
            elif i in literal or any(c not in inv for c in p):
                texts.append(p), raw.append(None)
            else:
                texts.append(None), raw.append(bytes(inv[c] for c in p))
        return cls(tuple(texts), tuple(raw), False, ByteMode.MAXIMAL_SUBPART)

    def __len__(self) -> int:
        return len(self.texts)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for on its own: its text's UTF-8 (a sentencepiece word piece with its leading
        space), its raw byte(s) (byte fallback, byte-level BPE), or nothing (a control token)."""
        b = self.raw[token_id]
        if b is not None:
            return b
        t = self.texts[token_id]
        return t.encode("utf-8") if t else b""


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _utf8_len(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # continuation byte or a lead that can never start a valid character


def _is_valid_prefix(chunk: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(chunk, final=False)
        return True
    except UnicodeDecodeError:
        return False


def decode_bytes_per_byte(buf: bytes, final: bool, at_end: bool = False) -> tuple[str, bytes]:
    """Decode as much of ``buf`` as is settled; return (text, bytes still pending). ``at_end``: the sequence ends
    here, and a character it cut short (``max_tokens`` reached inside an emoji) is one U+FFFD, as Python's decoder
    and the Unicode recommendation have it; elsewhere each invalid byte is one, as sentencepiece decodes."""
    out: list[str] = []
    i, n = 0, len(buf)
    while i < n:
        need = _utf8_len(buf[i])
        if need == 0:
            out.append(REPLACEMENT)
            i += 1
            continue
        chunk = buf[i : i + need]
        if len(chunk) < need:
            if not final and _is_valid_prefix(chunk):
                break
            if at_end:  # the bytes that end the sequence: as Python's decoder replaces them
                out.append(chunk.decode("utf-8", "replace"))
                i += len(chunk)
                continue
            out.append(REPLACEMENT)
            i += 1
            continue
        try:
            out.append(chunk.decode("utf-8"))
            i += need
        except UnicodeDecodeError:
            out.append(REPLACEMENT)
            i += 1
    return "".join(out), buf[i:]


class IncrementalDetokenizer:
    """Feed token ids, get only the new text. Never emits half a character."""

    __slots__ = ("table", "_pending", "_started", "_lossy", "n_tokens")

    def __init__(self, table: TokenTable):
        self.table = table
        self._pending = b""
        self._started = False  # has any text piece or byte been emitted yet
        self._lossy = (
            codecs.getincrementaldecoder("utf-8")("replace") if table.byte_mode is ByteMode.MAXIMAL_SUBPART else None
        )
        self.n_tokens = 0

    def push(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        texts, raw = self.table.texts, self.table.raw
        for t in ids:
            self.n_tokens += 1
            if not 0 <= t < len(texts):
                raise ValueError(f"token id {t} is outside the vocabulary of {len(texts)}")
            b = raw[t]
            if b is not None:
                self._pending += b
                continue
            s = texts[t]
            if s is None:
                # a control token ends a byte run in sentencepiece (byte-level BPE just drops it)
                if self._pending and self._lossy is None:
                    out.append(self._drain(final=True))
                continue
            if self._pending:
                out.append(self._drain(final=True))
            if not self._started and s:
                if self.table.strip_leading_space and s[0] == " " and t not in self.table.keep_space_ids:
                    s = s[1:]
                self._started = True
            out.append(s)
        if self._pending:
            out.append(self._drain(final=False))
        return "".join(out)

    def flush(self) -> str:
        """End of sequence: settle any incomplete bytes (a character cut short becomes one U+FFFD)."""
        return self._drain(final=True, at_end=True) if self._pending else ""

    def _drain(self, final: bool, at_end: bool = False) -> str:
        if self._lossy is not None:
            text = self._lossy.decode(self._pending, final=final)
            self._pending = b""
        else:
            text, self._pending = decode_bytes_per_byte(self._pending, final, at_end)
        if text:
            self._started = True
        return text


def decode_all(table: TokenTable, ids: Iterable[int]) -> str:
    d = IncrementalDetokenizer(table)
    return d.push(ids) + d.flush()


class StopMatcher:
    """Finds stop strings in streamed text, holding back only a possible partial match."""

    __slots__ = ("stops", "_held", "_maxlen", "_prefixes", "_last_chars")

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(s for s in dict.fromkeys(stops) if s)
        self._held = ""
        self._maxlen = max((len(s) for s in self.stops), default=0)
        # every proper prefix of a stop string, and the characters such a prefix can end with
        self._prefixes = frozenset(s[:k] for s in self.stops for k in range(1, len(s)))
        self._last_chars = frozenset(p[-1] for p in self._prefixes)

    def push(self, text: str) -> tuple[str, str | None]:
        """Return (text safe to emit, the stop string matched or None)."""
        if not self.stops:
            return text, None
        buf = self._held + text
        hit, hit_at = None, len(buf)
        for s in self.stops:
            j = buf.find(s)
            if j != -1 and j < hit_at:
                hit, hit_at = s, j
        if hit is not None:
            self._held = ""
            return buf[:hit_at], hit
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], None

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest end of ``buf`` that could still grow into a stop string."""
        if not buf or buf[-1] not in self._last_chars:  # the common case: no prefix ends like this
            return 0
        for k in range(min(self._maxlen - 1, len(buf)), 0, -1):
            if buf[-k:] in self._prefixes:
                return k
        return 0


@dataclass
class StreamStep:
    text: str
    finish_reason: FinishReason | None = None


class TextStream:
    """Token ids in, final-correct text deltas out: detokenisation + eos + stop strings + length."""

    def __init__(
        self,
        table: TokenTable,
        stops: Iterable[str] = (),
        eos_ids: Iterable[int] = (),
        max_new_tokens: int | None = None,
    ):
        self.detok = IncrementalDetokenizer(table)
        self.stopper = StopMatcher(stops)
        self.eos_ids = frozenset(eos_ids)
        self.max_new_tokens = max_new_tokens
        self.n_generated = 0
        self.finish_reason: FinishReason | None = None
        self.stop_string: str | None = None

    def push(self, ids: Sequence[int]) -> StreamStep:
        if self.finish_reason is not None:
            return StreamStep("", self.finish_reason)
        take: list[int] = []
        reason = None
        for t in ids:
            self.n_generated += 1
            if t in self.eos_ids:
                reason = FinishReason.EOS
                break
            take.append(t)
            if self.max_new_tokens is not None and self.n_generated >= self.max_new_tokens:
                reason = FinishReason.LENGTH
                break
        text = self.detok.push(take)
        if reason is not None:
            text += self.detok.flush()
        emit, stop = self.stopper.push(text)
        if stop is not None:
            self.stop_string = stop
            return self._finish(emit, FinishReason.STOP)
        if reason is not None:
            return self._finish(emit + self.stopper.flush(), reason)
        return StreamStep(emit)

    def finish(self, reason: FinishReason) -> StreamStep:
        """The producer ended (engine said done, cancelled, error): release everything held back."""
        if self.finish_reason is not None:
            return StreamStep("", self.finish_reason)
        emit, stop = self.stopper.push(self.detok.flush())
        if stop is not None:
            self.stop_string = stop
            return self._finish(emit, FinishReason.STOP)
        return self._finish(emit + self.stopper.flush(), reason)

    def end(self, cancelled: bool = False) -> StreamStep:
        """The engine's stream is over (or was cancelled) without eos or a stop string seen here."""
        return self.finish(reason_at_end(cancelled, self.n_generated, self.max_new_tokens))

    def _finish(self, text: str, reason: FinishReason) -> StreamStep:
        self.finish_reason = reason
        return StreamStep(text, reason)
