"""Guided decoding for the reference engine, as TensorRT-LLM's executor does it with ``guided_decoding_backend:
xgrammar`` (contracts/guided-decoding.json), on CPU:

- the tokenizer info JSON (``encoded_vocab``, ``tokenizer_str``, ``stop_token_ids``: the file TensorRT-LLM's
  ``generate_xgrammar_tokenizer_info.py`` writes, and ``ziya-trt build`` writes next to the engine) becomes an xgrammar
  ``TokenizerInfo`` the way the executor's ``GuidedDecoder`` builds it: the vocabulary type and prefix-space rule
  detected from ``tokenizer_str``, and the model's vocabulary size (which may be padded past the tokenizer's: the
  ids past it are never allowed);
- each request's guide is compiled once (``GrammarCache``: an LRU by (type, guide), as the executor's compiler caches);
- every step, the request's matcher fills a token bitmask, which is applied to the logits before anything is taken
  from them (penalties first, then the mask, then greedy or sampling, and the log probability), and then accepts the
  token chosen. When the grammar is complete the mask allows only the stop tokens, so the model ends with the end
  token; the matcher is then terminated.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import InvalidRequestError
from ..text.guide import Guide, xgrammar_message

TOKENIZER_INFO_FILE = "xgrammar_tokenizer_info.json"  # the name TensorRT-LLM's script gives it
TOKENIZER_INFO_KEYS = ("encoded_vocab", "tokenizer_str", "stop_token_ids")  # what the backend reads, unguarded


def tokenizer_info_dict(hf) -> dict:
    """The tokenizer info JSON for a transformers tokenizer, as TensorRT-LLM writes it for a fast tokenizer: every token
    by id, the backend tokenizer's JSON, and the end token as the one stop token."""
    if not getattr(hf, "is_fast", False):
        raise ValueError(f"tokenizer info: {type(hf).__name__} is not a fast (tokenizers) tokenizer; the backend reads "
                         "tokenizer_str, which only a fast tokenizer has")
    vocab = hf.get_vocab()
    return {"encoded_vocab": [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])],
            "tokenizer_str": hf.backend_tokenizer.to_str(),
            "stop_token_ids": [hf.eos_token_id]}


def write_tokenizer_info(hf, path: str | Path) -> Path:
    p = Path(path)
    p.write_text(json.dumps(tokenizer_info_dict(hf), ensure_ascii=False), encoding="utf-8")
    return p


def read_tokenizer_info(path: str | Path) -> dict:
    """The JSON, with the three keys the backend reads (it throws on a missing one); a ``ValueError`` names what is
    wrong."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot read the xgrammar tokenizer info ({e})") from None
    missing = [k for k in TOKENIZER_INFO_KEYS if not isinstance(d, dict) or d.get(k) is None]
    if missing:
        raise ValueError(f"{p}: the xgrammar tokenizer info lacks {', '.join(missing)}")
    return d


def mismatch(info: dict, hf) -> str | None:
    """Why a tokenizer info JSON does not belong to this tokenizer (None: it does)."""
    want = tokenizer_info_dict(hf)
    a, b = info["encoded_vocab"], want["encoded_vocab"]
    if len(a) != len(b):
        return f"{len(a)} tokens in the file, {len(b)} in the tokenizer"
    diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if diff is not None:
        return f"token {diff} is {a[diff]!r} in the file, {b[diff]!r} in the tokenizer"
    if list(info["stop_token_ids"]) != want["stop_token_ids"]:
        return f"stop_token_ids {info['stop_token_ids']} in the file, {want['stop_token_ids']} in the tokenizer"
    return None


def xgrammar_tokenizer_info(info: dict, vocab_size: int):
    """An xgrammar ``TokenizerInfo`` as the executor's ``GuidedDecoder`` builds it from the JSON."""
    import xgrammar as xgr

    meta = xgr.TokenizerInfo._detect_metadata_from_hf(info["tokenizer_str"])
    return xgr.TokenizerInfo(info["encoded_vocab"], meta["vocab_type"], vocab_size=vocab_size,
                             stop_token_ids=list(info["stop_token_ids"]), add_prefix_space=meta["add_prefix_space"])


class GrammarCache:
    """Compiled grammars by (guide type, guide), the least recently used dropped past ``size``. Thread-safe: requests
    compile on the threads that submit them, never on the engine loop's."""

    def __init__(self, tokenizer_info, size: int = 64):
        import xgrammar as xgr

        self.info = tokenizer_info
        self.vocab_size = tokenizer_info.vocab_size
        self.size = size
        self._compiler = xgr.GrammarCompiler(tokenizer_info, max_threads=1, cache_enabled=False)
        self._cache: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._lock = threading.Lock()
        self._compiling = threading.Lock()  # one compilation at a time: the compiler is shared
        self.compiled = 0  # compilations, for the tests and the bench

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int, size: int = 64) -> "GrammarCache":
        return cls(xgrammar_tokenizer_info(read_tokenizer_info(path), vocab_size), size)

    def get(self, guide: Guide, field: str = "guided_decoding_guide"):
        key = guide.key()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        with self._compiling:
            compiled = self._compile(guide, field)
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            self.compiled += 1
        return compiled

    def _compile(self, guide: Guide, field: str):
        c = self._compiler
        try:
            if guide.type == "json":
                return c.compile_builtin_json_grammar()
            if not guide.text:
                raise InvalidRequestError(f"{field}: a {guide.type} guide needs its text", field)
            # the executor's calls, with their defaults: any whitespace, xgrammar's strict mode
            compile_ = {"json_schema": c.compile_json_schema, "regex": c.compile_regex,
                        "ebnf_grammar": c.compile_grammar}.get(guide.type)
            if compile_ is None:
                raise InvalidRequestError(f"guided_decoding_guide_type: {guide.type!r} is not a guide type this "
                                          "engine takes", "guided_decoding_guide_type")
            return compile_(guide.text)
        except InvalidRequestError:
            raise
        except Exception as e:
            raise InvalidRequestError(f"{field}: not a valid {guide.type.replace('_', ' ')}: {xgrammar_message(e)}",
                                      field) from None


class GuideState:
    """One request's matcher and bitmask."""

    __slots__ = ("matcher", "bitmask", "vocab_size")

    def __init__(self, compiled, vocab_size: int):
        import xgrammar as xgr

        self.matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = vocab_size
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with every token the grammar does not allow at -inf (in place, as xgrammar's kernel does)."""
        import xgrammar as xgr

        self.matcher.fill_next_token_bitmask(self.bitmask)
        xgr.apply_token_bitmask_inplace(logits, self.bitmask, vocab_size=self.vocab_size)
        return logits

    def accept(self, token: int) -> bool:
        return self.matcher.accept_token(token)

    @property
    def terminated(self) -> bool:
        return self.matcher.is_terminated()
