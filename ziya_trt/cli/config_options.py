"""Command-line options generated from a config model's fields (``ServeConfig`` for ``ziya-trt serve``), as vLLM
derives its engine flags from ``EngineArgs``: nothing is written twice.

- Each field is one option: ``--`` and its name in kebab case, unless the field names its own flag in its
  ``json_schema_extra`` (``config_model.flag``), or none at all (``NOT_A_FLAG``: derived, or set otherwise).
- Its type, default and choices (an enum's values, a ``Literal``'s) come from the annotation; a bool that is on
  by default is ``--x``/``--no-x``; the field's description is the help, with the default after it.
- A ``tuple[str, ...]`` field is a repeatable option (``--cors-origin A --cors-origin B``).
- A nested config (``http``, ``supervisor``) is a group of its own in ``--help``; its flags are named alike.
- The options given on the command line are remembered (``given``), so a config read from a file can be
  changed by exactly those (``config_values(ns, model, given_only=True)``).
- ``named_by_flags`` reports a bad value by the flag it came from (``--ready-timeout: 0 must be ...``).
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..serving.config_model import ConfigError

GIVEN = "given_config_options"  # on the parsed namespace: the dests of the options given on the command line
_SCALARS = (int, float, str, Path)
# from the field name's suffix (the first that fits), else N for a number
_METAVARS = {"_per_s": "RATE", "_s": "SECONDS", "_ms": "MS", "_bytes": "BYTES", "_dir": "DIR"}


@dataclass(frozen=True)
class ConfigOption:
    path: tuple[str, ...]  # the field's place in the config, e.g. ("supervisor", "exit_timeout_s")
    flag: str
    field: FieldInfo

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def kind(self) -> Any:
        """The field's type, without ``| None``."""
        return _plain(self.field.annotation)


def _plain(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def config_options(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[ConfigOption]:
    """Every field of ``model`` (nested configs' fields too) that is a command-line option."""
    out = []
    for name, field in model.model_fields.items():
        if _is_model(_plain(field.annotation)):
            out += config_options(_plain(field.annotation), prefix + (name,))
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = extra.get("flag", "--" + name.replace("_", "-"))
        if flag is not None:
            out.append(ConfigOption(prefix + (name,), flag, field))
    return out


# --- the parser ----------------------------------------------------------------------------------------------
def _remember(ns: argparse.Namespace, dest: str) -> None:
    given = getattr(ns, GIVEN, None)
    if given is None:
        given = set()
        setattr(ns, GIVEN, given)
    given.add(dest)


class _Store(argparse.Action):
    def __call__(self, parser, ns, values, option_string=None):
        setattr(ns, self.dest, values)
        _remember(ns, self.dest)


class _Append(argparse.Action):
    """A repeatable option (a ``tuple[str, ...]`` field): each use adds one value; given at all, it replaces the
    default (a config file's list too)."""

    def __call__(self, parser, ns, values, option_string=None):
        if self.dest not in given(ns):
            setattr(ns, self.dest, ())
        setattr(ns, self.dest, (*getattr(ns, self.dest), values))
        _remember(ns, self.dest)


class _Switch(argparse.BooleanOptionalAction):
    def __call__(self, parser, ns, values, option_string=None):
        super().__call__(parser, ns, values, option_string)
        _remember(ns, self.dest)


def _argument(o: ConfigOption) -> dict:
    """``add_argument``'s keywords for one option."""
    t, default = o.kind, o.field.get_default(call_default_factory=True)
    help_text = (o.field.description or "").replace("%", "%%")
    if t is bool:
        return dict(action=_Switch, default=default, help=help_text + " (default: %(default)s)")
    kw: dict = dict(action=_Store, help=help_text + ("" if default is None else " (default: %(default)s)"))
    if isinstance(t, type) and issubclass(t, enum.Enum):
        kw.update(type=str, choices=[m.value for m in t], default=default.value if default is not None else None)
    elif typing.get_origin(t) is Literal:
        choices = typing.get_args(t)
        kw.update(type=type(choices[0]), choices=list(choices), default=default)
    elif typing.get_origin(t) is tuple and typing.get_args(t)[1:] == (...,) and typing.get_args(t)[0] is str:
        kw.update(action=_Append, type=str, default=tuple(default), metavar=o.path[-1].removesuffix("s").upper(),
                  help=help_text + " (repeat for more)")
    elif t in _SCALARS:
        name = o.path[-1]
        metavar = next((m for k, m in _METAVARS.items() if name.endswith(k)), "N" if t in (int, float) else None)
        kw.update(type=t, default=default, metavar=metavar)
    else:
        raise TypeError(f"{o.flag}: no command-line form for {t!r}; mark the field NOT_A_FLAG")
    return kw


def add_config_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> list[ConfigOption]:
    """Add an option per field of ``model`` to ``parser``; a nested config's in a group of its own."""
    options, groups = config_options(model), {}
    for o in options:
        where = parser
        if len(o.path) > 1:
            head = o.path[0]
            if head not in groups:
                groups[head] = parser.add_argument_group(f"{head}: {model.model_fields[head].description}")
            where = groups[head]
        where.add_argument(o.flag, **_argument(o))
    return options


# --- back to a config ----------------------------------------------------------------------------------------
def given(ns: argparse.Namespace) -> set[str]:
    """The dests of the config options given on the command line (not left at their defaults)."""
    return set(getattr(ns, GIVEN, ()))


def config_values(ns: argparse.Namespace, model: type[BaseModel], given_only: bool = False) -> dict:
    """The values of ``model``'s options as its (nested) fields; ``given_only``: those given on the command
    line."""
    out: dict = {}
    chosen = given(ns)
    for o in config_options(model):
        if given_only and o.dest not in chosen:
            continue
        d = out
        for part in o.path[:-1]:
            d = d.setdefault(part, {})
        d[o.path[-1]] = getattr(ns, o.dest)
    return out


def _has(values: dict, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def named_by_flags(e: ConfigError, model: type[BaseModel], values: dict) -> ConfigError:
    """``e`` (from building ``model``) with each problem of a value taken from the command line (one of
    ``values``) named by its flag."""
    if not e.problems:
        return e
    flags = {o.path: o.flag for o in config_options(model) if _has(values, o.path)}
    described = "; ".join(p.describe(flags.get(p.where)) for p in e.problems)
    return ConfigError(f"{getattr(model, 'config_name', 'config')}: {described}", e.problems)
