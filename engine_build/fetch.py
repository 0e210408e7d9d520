"""Get a checkpoint from ModelScope (with progress, resume and revision) or use a local directory."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from ziya_trt.errors import ZiyaError

DEFAULT_MODEL = "Fengshenbang/Ziya2-13B-Chat"
MODELSCOPE = "https://www.modelscope.cn"
MODELSCOPE_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class FetchError(ZiyaError):
    pass


def reachable(url: str, timeout_s: float = 5.0) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_modelscope_id(model: str) -> bool:
    """ModelScope's ``org/name`` form (one slash, no path prefix)."""
    return MODELSCOPE_ID.fullmatch(model) is not None


def looks_like_local_path(model: str) -> bool:
    """Starts with / . or ~, or has a path separator without being an ``org/name`` id."""
    if model.startswith(("/", ".", "~")):
        return True
    return any(s and s in model for s in (os.sep, os.altsep)) and not is_modelscope_id(model)


def check_local_path(model: str) -> None:
    """A ``model`` that is meant as a local directory but is not one is an error, not a ModelScope id."""
    local = Path(model).expanduser()
    if looks_like_local_path(model) and not local.is_dir():
        what = "is a file, not a checkpoint directory" if local.exists() else "no such directory"
        raise FetchError(f"model: {model}: {what} ({local.absolute()}); a ModelScope id has the form org/name")


def fetch_checkpoint(model: str = DEFAULT_MODEL, revision: str | None = None, cache_dir: str | Path | None = None,
                     offline: bool = False, endpoint: str | None = None) -> Path:
    """A local directory as is; otherwise ModelScope's ``snapshot_download`` (resumes partial files).

    Offline (or when ModelScope cannot be reached) only the local cache is used, and a model that is
    not there is a clear error rather than a hang."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    check_local_path(model)
    from modelscope.hub.snapshot_download import snapshot_download

    if not offline and not reachable(endpoint or MODELSCOPE):
        offline = True
    try:
        path = snapshot_download(model, revision=revision, cache_dir=str(cache_dir) if cache_dir else None,
                                 local_files_only=offline, endpoint=endpoint)
    except Exception as e:
        where = "the local ModelScope cache" if offline else "ModelScope"
        raise FetchError(
            f"cannot get {model}{'@' + revision if revision else ''} from {where}: {type(e).__name__}: {e}. "
            f"Pass a local checkpoint directory instead, or download it on a machine with network access."
        ) from e
    return Path(path)
