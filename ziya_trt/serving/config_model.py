"""``FrozenConfig``: the base of the serving configs (``ServeConfig`` and its parts), a frozen pydantic model
that refuses unknown fields and reports every bad value as a ``ConfigError`` naming the field and the reason.

pydantic's own ``ValidationError`` never leaves here: ``ConfigError.problems`` keeps each one as a ``Problem``
(the field's path, the value given, why it is refused), so a caller that took the values from somewhere else
(``ziya-trt serve``'s flags) can name them its own way.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ZiyaError

_UNITS = {"_per_s": "", "_s": " seconds", "_ms": " ms", "_bytes": " bytes"}  # from a field name's suffix (the first)
_building: ContextVar[bool] = ContextVar("building a config", default=False)
_BOUNDS = {"greater_than": ("gt", "more than"), "greater_than_equal": ("ge", "at least"),
           "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}


@dataclass(frozen=True)
class Problem:
    """One value refused: ``where`` is the field's path (empty: the config as a whole), ``value`` what was given."""

    where: tuple[str, ...]
    value: Any
    why: str

    def describe(self, name: str | None = None) -> str:
        """``<field> <value> <why>``, or ``<name>: <value> <why>`` for a value given as ``name`` (a flag)."""
        if not self.where:
            return self.why
        shown = _show(self.value)
        if name is not None:
            return f"{name}: {shown} {self.why}"
        return f"{'.'.join(self.where)} {shown} {self.why}"


class ConfigError(ZiyaError):
    """A serve configuration is incomplete or inconsistent."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()):
        super().__init__(message)
        self.problems = tuple(problems)


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (str, PurePath)):
        return repr(str(v))
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _unit(field: str) -> str:
    return next((unit for suffix, unit in _UNITS.items() if field.endswith(suffix)), "")


def problems_of(e: ValidationError) -> tuple[Problem, ...]:
    """pydantic's errors as ``Problem``s, in words of this project (no links, no error codes); the unknown
    fields together, as one."""
    out, unknown = [], []
    for err in e.errors(include_url=False):
        where = tuple(str(p) for p in err["loc"])
        kind, ctx, msg = err["type"], err.get("ctx") or {}, err["msg"]
        if kind == "extra_forbidden":
            unknown.append(".".join(where))
            continue
        if kind in _BOUNDS:
            key, words = _BOUNDS[kind]
            why = f"must be {words} {_show(ctx[key])}{_unit(where[-1] if where else '')}"
        elif kind in ("literal_error", "enum"):
            why = f"is not one of {ctx.get('expected', '')}"
        elif kind == "missing":
            why = "is missing"
        elif kind in ("value_error", "assertion_error"):
            why = msg.split(", ", 1)[1] if ", " in msg else msg
        else:
            why = f"is not valid: {msg}"
        out.append(Problem(where, None if not where else err.get("input"), why))
    if unknown:
        out.insert(0, Problem((), None, f"unknown field(s) {', '.join(sorted(unknown))}"))
    return tuple(out)


class FrozenConfig(BaseModel):
    """A frozen, validated configuration: every field checked where it is built (``Field`` constraints and the
    model's own validators), never changed after; ``with_`` builds a changed copy, validated again."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    config_name: ClassVar[str] = "config"  # how its errors begin: "<config_name>: <problems>"

    def __init__(self, /, **data: Any) -> None:
        if _building.get():  # a part of a config being built: pydantic adds the part's place to its errors
            super().__init__(**data)
            return
        token = _building.set(True)
        try:
            super().__init__(**data)
        except ValidationError as e:
            problems = problems_of(e)
            raise ConfigError(f"{self.config_name}: " + "; ".join(p.describe() for p in problems), problems) from None
        finally:
            _building.reset(token)

    def with_(self, **changes: Any):
        """A copy with ``changes``, validated as a new config is (``model_copy`` would not validate). A dict for a
        nested config changes only the fields it names: ``cfg.with_(supervisor={"restart_limit": 0})``."""
        data = self.model_dump()
        for k, v in changes.items():
            data[k] = data[k] | v if isinstance(v, dict) and isinstance(data.get(k), dict) else v
        return type(self)(**data)


# --- how ``ziya-trt serve`` shows a field (``cli/config_options.py``), kept in the field's ``json_schema_extra`` ---
def flag(name: str) -> dict:
    """The field's flag, where it is not ``--`` and the field's name in kebab case."""
    return {"flag": name}


NOT_A_FLAG = {"flag": None}  # a field the command line does not set (derived, or set by another option)
