"""Text at the boundary is Unicode scalar values: JSON can spell a lone surrogate (``"\\ud800"``), which Python
decodes into a ``str`` that no encoder takes, so it would fail deep inside tokenising instead of as the client's
mistake. Every text field of every API goes through ``refuse_surrogates`` where it is parsed."""

from __future__ import annotations

import re

from ..errors import InvalidRequestError

_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_surrogates(value, field: str) -> None:
    """Refuse a string anywhere in ``value`` (keys of objects too) that holds a lone surrogate, naming where:
    ``field`` is the name of ``value`` itself (``messages``), the message gives the whole path
    (``messages.0.content``)."""
    _walk(value, field, field)


def _walk(value, path: str, field: str) -> None:
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        if m:
            raise InvalidRequestError(f"{path or 'body'}: a lone surrogate (U+{ord(m.group()):04X}) at character "
                                      f"{m.start()} is not Unicode text", field or "body")
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk(k, path, field)
            _walk(v, f"{path}.{k}" if path else str(k), field or str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{path}.{i}", field)
