"""The launcher's own limits, parts of ``ServeConfig``: those of the HTTP guard in front of tritonserver
(``http/guard.py``, on the launcher's event loop) and those of the supervisor that starts, restarts and stops
it (``process/``, the launcher's threads). The Python models read the config whole but never these."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .config_model import FrozenConfig, flag

READY_TIMEOUT_S = 180.0  # how long the launcher waits for tritonserver to be ready (the engine loaded)
DEFAULT_MAX_BODY = 1024 * 1024


class HttpLimits(FrozenConfig):
    """What a client may hold of the public HTTP port (the guard's limits)."""

    config_name = "http limits"

    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY, ge=0, json_schema_extra=flag("--http-body-limit"),
        description="largest HTTP request body in bytes, enforced in front of tritonserver (0: no guard, and then "
                    "no OpenAI-compatible API either)")
    max_connections: int | None = Field(
        None, ge=1, json_schema_extra=flag("--http-max-connections"),
        description="HTTP connections open at once; more are closed as they come (default: the open-files limit "
                    "less 256, at least 64)")
    header_timeout_s: float = Field(
        15.0, gt=0, json_schema_extra=flag("--http-header-timeout"),
        description="seconds a connection has to send a whole request, from its opening or its last response; "
                    "idle and trickling connections are closed after it")
    body_budget_bytes: int = Field(
        64 * 1024 * 1024, ge=1, json_schema_extra=flag("--http-body-budget"),
        description="bytes of request bodies being read at once, all connections together; a request over it is "
                    "refused as overloaded")
    cors_origins: tuple[str, ...] = Field(
        (), json_schema_extra=flag("--cors-origin"),
        description="a browser origin (scheme://host[:port]) whose pages may call the OpenAI-compatible API, or * "
                    "for any; none: no CORS headers, so browsers keep other sites' pages from reading its answers")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for o in v:
            if o != "*" and not _ORIGIN.fullmatch(o):
                raise ValueError(f"has {o!r}, not an origin: give scheme://host[:port] (no path), or *")
        return v


_ORIGIN = re.compile(r"https?://[^/\s:]+(:[0-9]{1,5})?")


class SupervisorLimits(FrozenConfig):
    """How long the launcher waits for tritonserver, and how often it brings it back."""

    config_name = "supervisor limits"

    exit_timeout_s: int = Field(
        30, ge=0, json_schema_extra=flag("--exit-timeout"),
        description="seconds tritonserver waits for in-flight requests when it stops (its --exit-timeout-secs)")
    ready_timeout_s: float = Field(
        READY_TIMEOUT_S, gt=0, json_schema_extra=flag("--ready-timeout"),
        description="seconds to wait for the server to be ready (the engine loaded) before giving up")
    restart_limit: int = Field(
        3, ge=0, json_schema_extra=flag("--restart-limit"),
        description="restarts of a crashed tritonserver (or of one of its Python stubs) within a minute before "
                    "the launcher gives up and stops")
