"""The one TensorRT-LLM version this project builds and serves with, and which Triton containers carry it.

These are the ``containers`` facts of ``contracts/trtllm-1.2.json`` (Triton's compatibility table and the
tensorrtllm_backend release branches), copied here because ``contracts/`` is not installed with the package;
``tests/engine_build/test_target.py`` fails if the two differ. Everything that names a version or a container
(build preflight, ``serve --engine tensorrt_llm``, the GPU smoke test) takes it from here.
"""

from __future__ import annotations

from ziya_trt.errors import ZiyaError

TRTLLM_VERSION = "1.2.1"
IMAGE = "nvcr.io/nvidia/tritonserver:{tag}-trtllm-python-py3"
RECOMMENDED_TAG = "26.07"
# what the recommended container holds besides TensorRT-LLM
TRITON_VERSION, TENSORRT_VERSION, CUDA_VERSION = "2.71.0", "10.14.1.48", "13.1"
TRTLLM_BY_TAG = {
    "25.10": "1.0.0",
    "25.11": "1.0.3.2510",
    "25.12": "1.1.0",
    "26.01": "1.1.0",
    "26.02": "1.1.0",
    "26.03": "1.2.0",
    "26.04": "1.2.1",
    "26.05": "1.2.1",
    "26.06": "1.2.1",
    "26.07": "1.2.1",
}


class VersionMismatchError(ZiyaError):
    """An engine, its manifest and the installed TensorRT-LLM do not agree on the version."""


def image(tag: str) -> str:
    return IMAGE.format(tag=tag)


def tags_carrying(version: str) -> list[str]:
    """The container tags whose TensorRT-LLM is exactly ``version``, oldest first."""
    return [tag for tag, v in TRTLLM_BY_TAG.items() if v == version]


def container_for(version: str) -> str:
    """The Triton container to use for ``version``, in words: the recommended tag where it carries that
    version, else the newest tag that does, with the others named."""
    tags = tags_carrying(version)
    if not tags:
        return (f"no {image('<tag>')} in the compatibility table carries TensorRT-LLM {version} "
                f"(it lists {', '.join(f'{t}: {v}' for t, v in TRTLLM_BY_TAG.items())})")
    best = RECOMMENDED_TAG if RECOMMENDED_TAG in tags else tags[-1]
    others = [t for t in tags if t != best]
    also = f" ({', '.join(others)} carry TensorRT-LLM {version} too)" if others else ""
    return f"{image(best)}{also}"


def plain_version(recorded: str | None) -> str | None:
    """A recorded version without any note after it (older manifests wrote "1.2.1 (planned; ...)")."""
    return recorded.split()[0] if recorded and recorded.split() else None
