"""Which tritonserver to run: the 2.51 binary that the ``nvidia-pytriton`` wheel ships (CPU, with the
python backend), laid out once under the cache directory, or an existing one (e.g.
``/opt/tritonserver/bin/tritonserver`` in the Triton container)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ...cache import cache_dir
from ...errors import ZiyaError


class ServerStartError(ZiyaError):
    """tritonserver could not be found or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path
    lib_dirs: tuple[Path, ...] = ()


def bundled_triton() -> TritonInstall:
    """Lay out the pytriton wheel's tritonserver (bin, backends, caches, python stub) once."""
    try:
        import pytriton
    except ImportError as e:
        raise ServerStartError("nvidia-pytriton is not installed; pass --tritonserver PATH instead") from e
    pkg = Path(pytriton.__file__).parent / "tritonserver"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pkg / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerStartError(f"nvidia-pytriton has no python backend stub for Python {ver}")
    dest = cache_dir("tritonserver", f"py{ver}")
    marker = dest / ".complete"
    if not marker.exists() or marker.read_text() != str(pkg):
        for part in ("bin", "backends", "caches"):
            if (dest / part).exists():
                shutil.rmtree(dest / part)
            shutil.copytree(pkg / part, dest / part)
        shutil.copy2(stub, dest / "backends" / "python" / "triton_python_backend_stub")
        marker.write_text(str(pkg))
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(dest / "bin" / "tritonserver", dest / "backends", (libs,))


def external_triton(binary: str | Path) -> TritonInstall:
    b = Path(binary)
    if not b.exists():
        raise ServerStartError(f"tritonserver binary {b} does not exist")
    return TritonInstall(b, b.resolve().parent.parent / "backends")
