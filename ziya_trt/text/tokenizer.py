"""Tokenizer loading and validation for Ziya-style (sentencepiece) and other HF tokenizers.

Two ways to encode:
- ``encode(text)``: trusted text, exactly as the model card's own code does it
  (``AutoTokenizer.from_pretrained(ckpt)(prompt).input_ids``): added tokens such as ``<human>`` and
  ``<bot>`` in the text become their ids. For prompts the caller built, and for template text.
- ``encode_protected(text, content_spans)``: the same, except that nothing inside the content spans
  can become an added, special or control id (``forbidden_ids``). Where the text of such a token
  appears in content, that stretch is tokenised as if the token did not exist, so the characters
  still reach the model. For an honest conversation the ids are exactly ``encode``'s.

Decoding always goes through the table-driven detokeniser (``detok.py``), which reproduces
sentencepiece's ``decode``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from .detok import TokenTable, decode_all
from ..errors import TokenizerError

log = logging.getLogger(__name__)

HUMAN_TOKEN = "<human>"
BOT_TOKEN = "<bot>"
VOCAB_FILES = ("tokenizer.model", "tokenizer.json", "vocab.json")


@dataclass(frozen=True)
class SpecialIds:
    bos: int | None
    eos: int
    pad: int | None
    unk: int | None
    human: int | None
    bot: int | None


class ZiyaTokenizer:
    """One object the rest of the package uses; wraps a transformers tokenizer (and sentencepiece)."""

    def __init__(self, hf, path: Path, sp=None, add_bos: bool = True):
        self.hf = hf
        self.path = path
        self.sp = sp
        self.add_bos = add_bos
        vocab = hf.get_vocab()
        self.special = SpecialIds(
            bos=hf.bos_token_id,
            eos=hf.eos_token_id,
            pad=hf.pad_token_id,
            unk=hf.unk_token_id,
            human=vocab.get(HUMAN_TOKEN),
            bot=vocab.get(BOT_TOKEN),
        )

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def eos_id(self) -> int:
        return self.special.eos

    @property
    def pad_id(self) -> int:
        """Ziya2 has no pad piece; the card and the engines use 0."""
        return self.special.pad if self.special.pad is not None else 0

    @property
    def chat_template(self) -> str | None:
        return getattr(self.hf, "chat_template", None)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Trusted text, as the model card's code tokenises it: added tokens in it become their ids."""
        if self.sp is None:
            return self._with_bos(self.hf.encode(text, add_special_tokens=False), add_bos)
        return self._with_bos(self._sp_encode(text, self._added_spans(text)), add_bos)

    def _with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
        bos = self.add_bos if add_bos is None else add_bos
        if bos and self.special.bos is not None and (not ids or ids[0] != self.special.bos):
            ids = [self.special.bos] + ids
        return ids

    @cached_property
    def forbidden_ids(self) -> frozenset[int]:
        """Ids that user content may never produce: every added token, and the special and control ids."""
        ids = set(self._added)
        s = self.special
        ids |= {i for i in (s.bos, s.eos, s.pad, s.unk, s.human, s.bot) if i is not None}
        if self.sp is not None:
            ids |= {i for i in range(self.sp.get_piece_size()) if self.sp.is_control(i) or self.sp.is_unknown(i)}
        return frozenset(ids)

    @cached_property
    def _added(self) -> dict[int, str]:
        return {i: t.content for i, t in (getattr(self.hf, "added_tokens_decoder", {}) or {}).items() if t.content}

    @cached_property
    def _added_pattern(self) -> re.Pattern | None:
        """Added tokens as transformers matches them in text: leftmost, longest first."""
        texts = sorted(set(self._added.values()), key=len, reverse=True)
        return re.compile("|".join(map(re.escape, texts))) if texts else None

    def _added_spans(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, id) of every added token in ``text``."""
        if self._added_pattern is None:
            return []
        ids = {t: i for i, t in self._added.items()}
        return [(m.start(), m.end(), ids[m.group()]) for m in self._added_pattern.finditer(text)]

    def _sp_encode(self, text: str, marks: list[tuple[int, int, int]], sp=None) -> list[int]:
        """Like transformers' sentencepiece LlamaTokenizer: the added tokens at ``marks``, and sentencepiece
        on each stretch between them (each with its dummy prefix)."""
        sp = sp or self.sp
        out, pos = [], 0
        for start, end, tid in marks:
            if start > pos:
                out += sp.encode(text[pos:start])
            out.append(tid)
            pos = end
        return out + (sp.encode(text[pos:]) if pos < len(text) else [])

    def encode_protected(self, text: str, content_spans: Sequence[tuple[int, int]],
                         add_bos: bool | None = None) -> list[int]:
        """``encode(text)``, except that nothing inside ``content_spans`` (character ranges of ``text``)
        becomes a forbidden id: only the template's own added tokens (outside content) are matched, and
        the text between them is tokenised as if no added token existed. For content without any added
        token's text, the ids are exactly ``encode``'s."""

        def in_content(start: int, end: int) -> bool:
            return any(start < ce and cs < end for cs, ce in content_spans)

        if self.sp is not None and self._sp_plain is not None:
            marks = [m for m in self._added_spans(text) if not in_content(m[0], m[1])]
            return self._with_bos(self._sp_encode(text, marks, self._sp_plain), add_bos)
        return self._with_bos(self._hf_protected(text, in_content), add_bos)

    @cached_property
    def _sp_plain(self):
        """The sentencepiece model with its user-defined pieces (``<human>``, ``<bot>``) unused: it never
        produces them, nor any control piece, from text. None if the model cannot be rewritten."""
        try:
            import sentencepiece as spm
            from sentencepiece import sentencepiece_model_pb2 as pb

            m = pb.ModelProto()
            m.ParseFromString(self.sp.serialized_model_proto())
            for piece in m.pieces:
                if piece.type == pb.ModelProto.SentencePiece.USER_DEFINED:
                    piece.type = pb.ModelProto.SentencePiece.UNUSED
            return spm.SentencePieceProcessor(model_proto=m.SerializeToString())
        except Exception:  # protobuf missing or an unusual model: the offsets path below does the job
            log.debug("cannot rewrite the sentencepiece model of %s", self.path, exc_info=True)
            return None

    def _hf_protected(self, text: str, in_content) -> list[int]:
        """For transformers (Rust) tokenizers: encode the whole text, and where a forbidden id came from
        content, tokenise that stretch between two template markers again with no added tokens."""
        forbidden = self.forbidden_ids
        try:
            enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a Python tokenizer gives no offsets: mark nothing from content
            marks = [m for m in self._added_spans(text) if not in_content(m[0], m[1])]
            out, pos = [], 0
            for start, end, tid in marks:
                out += self._plain(text[pos:start]) + [tid]
                pos = end
            return out + self._plain(text[pos:])
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        marks = [k for k, (i, (a, b)) in enumerate(zip(ids, offsets)) if i in forbidden and not in_content(a, b)]
        if len(marks) == sum(i in forbidden for i in ids):  # nothing forbidden came from content
            return ids
        out: list[int] = []
        tok_start, char_start = 0, 0
        for m in [*marks, len(ids)]:
            char_end = offsets[m][0] if m < len(ids) else len(text)
            region = ids[tok_start:m]
            out += self._plain(text[char_start:char_end]) if any(i in forbidden for i in region) else region
            if m < len(ids):
                out.append(ids[m])
                char_start = offsets[m][1]
            tok_start = m + 1
        return out

    @cached_property
    def _plain_tokenizer(self):
        """The same tokenizer with no added tokens (so none is matched in text), or None."""
        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is None:
            return None
        try:
            from tokenizers import Tokenizer

            d = json.loads(backend.to_str())
            d["added_tokens"] = []
            return Tokenizer.from_str(json.dumps(d))
        except Exception:  # an unusual tokenizer.json: fall back to character by character
            log.debug("no plain tokenizer for %s", self.path, exc_info=True)
            return None

    def _plain(self, text: str) -> list[int]:
        """Ids for text as ordinary characters: never a forbidden id."""
        if not text:
            return []
        plain = self._plain_tokenizer
        if plain is not None:
            ids = plain.encode(text, add_special_tokens=False).ids
            if not any(i in self.forbidden_ids for i in ids):
                return ids
        return [i for ch in text for i in self._char_ids(ch)]

    def _char_ids(self, ch: str) -> list[int]:
        """One character as a piece of its own, else as its UTF-8 bytes (byte-fallback or byte-level pieces)."""
        one, byte = self._inverse
        if ch in one:
            return [one[ch]]
        ids = [byte[b] for b in ch.encode("utf-8") if b in byte]
        return ids if len(ids) == len(ch.encode("utf-8")) else []  # not representable: left out

    @cached_property
    def _inverse(self) -> tuple[dict[str, int], dict[int, int]]:
        t, forbidden = self.table, self.forbidden_ids
        one = {s: i for i, s in enumerate(t.texts) if s is not None and len(s) == 1 and i not in forbidden}
        byte = {r[0]: i for i, r in enumerate(t.raw) if r is not None and len(r) == 1 and i not in forbidden}
        return one, byte

    def count(self, text: str, add_bos: bool | None = None) -> int:
        return len(self.encode(text, add_bos))

    def decode(self, ids) -> str:
        return decode_all(self.table, ids)

    @cached_property
    def table(self) -> TokenTable:
        return build_token_table(self.hf, self.sp)


def build_token_table(hf, sp=None) -> TokenTable:
    n = len(hf)
    pieces = hf.convert_ids_to_tokens(list(range(n)))
    pieces = [p if p is not None else "" for p in pieces]
    added = getattr(hf, "added_tokens_decoder", {}) or {}
    control = {i for i, t in added.items() if getattr(t, "special", False)}
    control |= {i for i in (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) if i is not None}
    control.discard(hf.unk_token_id)
    literal = {i for i, t in added.items() if not getattr(t, "special", False)}
    decoder = repr(getattr(getattr(hf, "backend_tokenizer", None), "decoder", ""))
    if "ByteLevel" in decoder:
        return TokenTable.from_byte_level(pieces, skip_ids=control, literal_ids=literal)
    strip = True
    if sp is not None:
        strip = _sp_add_dummy_prefix(sp)
        control |= {i for i in range(min(n, sp.get_piece_size())) if sp.is_control(i)}
    elif "Strip" not in decoder:
        strip = False
    return TokenTable.from_pieces(
        pieces, skip_ids=control, literal_ids=literal, unk_id=hf.unk_token_id, strip_leading_space=strip
    )


def _sp_add_dummy_prefix(sp) -> bool:
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(sp.serialized_model_proto())
        return bool(m.normalizer_spec.add_dummy_prefix)
    except Exception:  # protobuf missing or unreadable: LLaMA's default
        return True


def load_tokenizer(path: str | Path, require_chat_tokens: bool = True) -> ZiyaTokenizer:
    """Load a tokenizer directory and check everything Ziya serving relies on, all at once."""
    p = Path(path)
    if not p.is_dir():
        raise TokenizerError(str(p), ["directory does not exist"])
    if not any((p / f).exists() for f in VOCAB_FILES):
        # transformers would silently build an empty vocabulary here
        raise TokenizerError(str(p), [f"no vocabulary file (one of {', '.join(VOCAB_FILES)})"])
    cfg = _read_json(p / "tokenizer_config.json")
    problems: list[str] = []
    sp = None
    try:
        hf, sp = _load_hf(p, cfg)
    except Exception as e:  # transformers raises many unrelated types here
        raise TokenizerError(str(p), [f"cannot be loaded by transformers: {type(e).__name__}: {e}"]) from e
    # LLaMA/sentencepiece checkpoints add bos unless told otherwise; others (ChatML) only when told
    tok = ZiyaTokenizer(hf, p, sp=sp, add_bos=bool(cfg.get("add_bos_token", sp is not None)))
    s = tok.special
    if tok.vocab_size < 3:
        problems.append(f"vocabulary has only {tok.vocab_size} tokens")
    if s.eos is None:
        problems.append("no eos token")
    if require_chat_tokens:
        if s.bos is None:
            problems.append("no bos token")
        missing = [t for t, have in ((HUMAN_TOKEN, s.human), (BOT_TOKEN, s.bot)) if have is None]
        problems += [f"missing added token {t}" for t in missing]
        if missing:  # another model's tokenizer: the way to serve it is its own chat template
            problems.append("this is not Ziya's tokenizer; to serve a model with a chat template of its own, "
                            "use --template chat_template")
    if sp is not None and sp.get_piece_size() > len(hf):
        problems.append(f"tokenizer.model has {sp.get_piece_size()} pieces but transformers sees {len(hf)}")
    if problems:
        raise TokenizerError(str(p), problems)
    return tok


def _load_hf(p: Path, cfg: dict):
    from transformers import AutoTokenizer

    if (p / "tokenizer.model").exists():
        import sentencepiece as spm
        # The tokenizers-backed class, which AutoTokenizer (the card's code) picks too: 5.x's LlamaTokenizer,
        # 4.x's LlamaTokenizerFast (5.x keeps that name for it). 4.x's LlamaTokenizer is the sentencepiece
        # one, which leaves user-defined pieces (<human>, <bot>) out of its added tokens and so does not
        # split the text at them.
        from transformers import LlamaTokenizerFast

        sp = spm.SentencePieceProcessor(model_file=str(p / "tokenizer.model"))
        hf = LlamaTokenizerFast.from_pretrained(
            str(p), add_bos_token=bool(cfg.get("add_bos_token", True)), legacy=bool(cfg.get("legacy", True))
        )
        return hf, sp
    return AutoTokenizer.from_pretrained(str(p)), None


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TokenizerError(str(path.parent), [f"{path.name} is not valid JSON: {e}"]) from e
