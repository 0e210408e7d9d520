"""Tokenizer loading and validation for Ziya-style (sentencepiece) and other HF tokenizers.

Encoding of a sentencepiece checkpoint goes through sentencepiece itself when the chat tokens are
pieces of its model, so the ids are exactly the ones the model file defines. Decoding always goes
through the table-driven detokeniser (``detok.py``), which reproduces sentencepiece's ``decode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .detok import TokenTable, decode_all
from ..errors import TokenizerError

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
        # sentencepiece tokenises the chat tokens inline only when they are pieces of its model
        self._sp_encodes = sp is not None and all(
            sp.piece_to_id(t) not in (sp.unk_id(), None) for t in (HUMAN_TOKEN, BOT_TOKEN)
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
        bos = self.add_bos if add_bos is None else add_bos
        if self._sp_encodes:
            ids = self.sp.encode(text)
            return ([self.special.bos] if bos and self.special.bos is not None else []) + ids
        ids = self.hf.encode(text, add_special_tokens=False)
        if bos and self.special.bos is not None and (not ids or ids[0] != self.special.bos):
            ids = [self.special.bos] + ids
        return ids

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
        if s.human is None:
            problems.append(f"missing added token {HUMAN_TOKEN}")
        if s.bot is None:
            problems.append(f"missing added token {BOT_TOKEN}")
    if sp is not None and sp.get_piece_size() > len(hf):
        problems.append(f"tokenizer.model has {sp.get_piece_size()} pieces but transformers sees {len(hf)}")
    if problems:
        raise TokenizerError(str(p), problems)
    return tok


def _load_hf(p: Path, cfg: dict):
    from transformers import AutoTokenizer

    if (p / "tokenizer.model").exists():
        import sentencepiece as spm
        from transformers import LlamaTokenizer

        sp = spm.SentencePieceProcessor(model_file=str(p / "tokenizer.model"))
        hf = LlamaTokenizer.from_pretrained(
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
