"""A secret on tritonserver's command line that ``ps`` does not show.

tritonserver takes its restricted-API keys only as arguments (``--http-restricted-api=<apis>:<header>=<key>``,
``--grpc-restricted-protocol=...``): ``src/command_line_parser.cc`` of 2.51 and 2.71 reads no file and no
environment variable for them. A process's arguments are readable by every local user (``/proc/PID/cmdline``).
So the launcher puts a random marker where the key goes, writes the key to a file of its own (mode 0600), and
starts tritonserver with a small preloaded library (``LD_PRELOAD``). Its constructor runs before ``main`` parses
the options: it reads the key from the file and points the arguments that hold the marker at copies with the key
in its place. ``/proc/PID/cmdline`` reads the original argument memory, which still holds the marker.

The library acts only in a process named ``tritonserver`` (mpirun passes the marker on to its ranks untouched)
and takes itself out of the environment there, so tritonserver's children (the Python stubs) do not load it.
It is compiled on first use with the C compiler (``$CC`` or ``cc``) into the cache. Without a compiler the key
goes on the command line itself, with a warning: then ``ps`` shows it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...cache import cache_dir

log = logging.getLogger(__name__)
MARKER_ENV, FILE_ENV, PRELOAD_WAS_ENV = "ZIYA_SECRET_MARKER", "ZIYA_SECRET_FILE", "ZIYA_PRELOAD_WAS"

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_secret(int argc, char **argv, char **envp) {
    (void)envp;
    const char *marker = getenv("ZIYA_SECRET_MARKER"), *path = getenv("ZIYA_SECRET_FILE");
    const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (!marker || !*marker || !path || argc < 1 || strcmp(base ? base + 1 : argv[0], "tritonserver") != 0)
        return;
    char secret[4096];
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(secret, 1, sizeof secret - 1, f);
    fclose(f);
    secret[n] = 0;
    secret[strcspn(secret, "\r\n")] = 0;
    size_t ml = strlen(marker), sl = strlen(secret);
    for (int i = 1; i < argc; i++) {
        char *at = strstr(argv[i], marker);
        if (!at)
            continue;
        size_t pre = (size_t)(at - argv[i]);
        char *out = malloc(strlen(argv[i]) - ml + sl + 1);
        if (!out)
            return;
        memcpy(out, argv[i], pre);
        memcpy(out + pre, secret, sl);
        strcpy(out + pre + sl, at + ml);
        argv[i] = out; /* main sees this copy; /proc/PID/cmdline still reads the marker */
    }
    const char *was = getenv("ZIYA_PRELOAD_WAS");
    if (was && *was)
        setenv("LD_PRELOAD", was, 1);
    else
        unsetenv("LD_PRELOAD");
    unsetenv("ZIYA_PRELOAD_WAS");
    unsetenv("ZIYA_SECRET_MARKER");
    unsetenv("ZIYA_SECRET_FILE");
}

/* glibc calls a library's init_array functions with (argc, argv, envp) before the program's main */
__attribute__((section(".init_array"), used)) static void (*put_secret_init)(int, char **, char **) = put_secret;
"""

_built: dict[str, Path | None] = {}


def library() -> Path | None:
    """The preloaded library, built once (per source, in the cache); None where it cannot be built or trusted."""
    if "lib" not in _built:
        _built["lib"] = _build()
    return _built["lib"]


def _build() -> Path | None:
    d = cache_dir("secret-arg")
    d.chmod(0o700)  # what tritonserver loads: no one else may replace it
    lib = d / f"secret_arg-{hashlib.sha256(SOURCE.encode()).hexdigest()[:16]}.so"
    if not lib.exists():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            log.warning("no C compiler (cc): the admin key goes on tritonserver's command line, which ps shows")
            return None
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            src, out = Path(tmp) / "secret_arg.c", Path(tmp) / "secret_arg.so"
            src.write_text(SOURCE)
            try:
                r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src)], capture_output=True,
                                   text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                r = subprocess.CompletedProcess([cc], 1, "", str(e))
            if r.returncode != 0:
                log.warning("could not build %s (%s): the admin key goes on tritonserver's command line, which ps "
                            "shows", lib.name, r.stderr.strip()[-500:])
                return None
            os.replace(out, lib)
    st = lib.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        log.warning("%s is not this user's alone: the admin key goes on tritonserver's command line", lib)
        return None
    return lib


def write_private(path: Path, text: str) -> Path:
    """``text`` in ``path``, readable and writable by this user only (never a symlink's target)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # it may have existed with other permissions
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def hide(cmd: list[str], env: dict[str, str], marker: str, secret: str,
         secret_file: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a tritonserver that gets ``secret`` (kept in ``secret_file``) wherever
    ``cmd`` has ``marker``: through the preloaded library, or, without one, on the command line itself."""
    lib = library()
    if lib is None:
        return [a.replace(marker, secret) for a in cmd], env
    was = env.get("LD_PRELOAD", "")
    return cmd, env | {"LD_PRELOAD": f"{lib} {was}".strip(), PRELOAD_WAS_ENV: was, MARKER_ENV: marker,
                       FILE_ENV: str(secret_file)}
