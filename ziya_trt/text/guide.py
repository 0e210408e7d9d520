"""Guided decoding (structured outputs): what a request asks its output to match, in the terms of TensorRT-LLM 1.2.1's
``tensorrt_llm`` model (``guided_decoding_guide_type``, ``guided_decoding_guide``; contracts/guided-decoding.json).

The backend maps four guide types, ``GUIDE_TYPES``; any other string it drops without a word and the request runs
unguided, so this project never sends one, and the engine stand-ins refuse one. ``json`` takes no guide (any JSON
value, xgrammar's built-in JSON grammar); ``json_schema`` a JSON schema; ``regex`` a regular expression;
``ebnf_grammar`` an EBNF grammar with a ``root`` rule (xgrammar's dialect, GBNF-like). A choice among fixed strings
(vLLM's ``guided_choice``) becomes an EBNF grammar here (``choice_grammar``): the backend has no type for it.

``check`` parses a guide with xgrammar alone (no tokenizer: cheap), so the fronts refuse a bad schema, regex or
grammar with a 400 naming their own field before anything reaches an engine; the engine compiles it again against the
model's vocabulary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..errors import InvalidRequestError

GUIDE_TYPES = ("json", "json_schema", "regex", "ebnf_grammar")  # what the backend maps (utils.cc)
MAX_GUIDE_BYTES = 256 * 1024  # a schema or grammar larger than this is refused before compiling
_XGRAMMAR_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (Check failed: \(.*?\) is false: )?")


@dataclass(frozen=True)
class Guide:
    """What the output must match: a guide type of ``GUIDE_TYPES`` and its text (None for ``json``)."""

    type: str
    text: str | None = None

    def key(self) -> tuple[str, str]:
        return self.type, self.text or ""


def choice_grammar(choices) -> str:
    """An EBNF grammar whose language is exactly ``choices`` (each a string)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


def xgrammar_message(e: Exception) -> str:
    """xgrammar's error without its log prefix (time, source file and line)."""
    lines = [s for s in str(e).strip().splitlines() if s.strip()]
    return _XGRAMMAR_PREFIX.sub("", lines[0] if lines else type(e).__name__)


def check(guide: Guide, field: str) -> Guide:
    """``guide`` if it is a guide the backend takes and xgrammar parses; else an ``InvalidRequestError`` naming
    ``field`` (the request's own name for it)."""
    if guide.type not in GUIDE_TYPES:
        raise InvalidRequestError(f"{field}: guide type {guide.type!r} is not one of {', '.join(GUIDE_TYPES)}", field)
    if guide.type == "json":
        return guide
    text = guide.text
    if not text:
        raise InvalidRequestError(f"{field}: a {guide.type} guide needs its text (the schema, regex or grammar)", field)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_GUIDE_BYTES:
        raise InvalidRequestError(f"{field}: over the limit of {MAX_GUIDE_BYTES} bytes", field)
    import xgrammar as xgr

    parse = {"json_schema": xgr.Grammar.from_json_schema, "regex": xgr.Grammar.from_regex,
             "ebnf_grammar": xgr.Grammar.from_ebnf}[guide.type]
    try:
        parse(text)
    except Exception as e:  # xgrammar raises RuntimeError (and others) for what it cannot parse
        raise InvalidRequestError(f"{field}: not a valid {guide.type.replace('_', ' ')}: {xgrammar_message(e)}",
                                  field) from None
    return guide
