"""One TensorRT-LLM version (1.2.1) end to end: the facts match the contracts, the build refuses any other
installed version, the manifest records the version that built the engine, and serving refuses a mismatch,
each error naming the container that carries the right version."""

import json

import pytest

from engine_build import build, target
from engine_build.build import BuildError, check_build_version, check_serving_versions, run_build
from engine_build.plan import make_plan
from engine_build.target import VersionMismatchError, container_for
from tests.contracts import facts
from ziya_trt.cli import main

C2607 = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"


def test_the_version_facts_are_the_contracts():
    c = facts()["containers"]
    assert target.IMAGE.replace("{tag}", "<tag>") == c["image"]
    assert target.TRTLLM_BY_TAG == c["tensorrt_llm_by_tag"]
    want = c["for_1_2_1"]
    assert target.TRTLLM_VERSION == "1.2.1" and target.RECOMMENDED_TAG == want["recommended_tag"]
    assert (target.TRITON_VERSION, target.TENSORRT_VERSION, target.CUDA_VERSION) == (
        want["triton"], want["tensorrt"], want["cuda"])
    assert target.TRTLLM_BY_TAG[target.RECOMMENDED_TAG] == target.TRTLLM_VERSION
    assert facts()["engine_dir"]["config_json_top_level_keys"][0] == build.ENGINE_CONFIG_VERSION_KEY


def test_the_container_named_for_each_version():
    assert container_for("1.2.1") == f"{C2607} (26.04, 26.05, 26.06 carry TensorRT-LLM 1.2.1 too)"
    assert container_for("1.1.0") == ("nvcr.io/nvidia/tritonserver:26.02-trtllm-python-py3 "
                                      "(25.12, 26.01 carry TensorRT-LLM 1.1.0 too)")
    assert container_for("1.2.0") == "nvcr.io/nvidia/tritonserver:26.03-trtllm-python-py3"
    assert container_for("9.9").startswith("no nvcr.io/nvidia/tritonserver:<tag>-trtllm-python-py3 in the")


def test_build_preflight_accepts_only_1_2_1():
    check_build_version("1.2.1")
    for installed, says in ((None, "TensorRT-LLM 1.2.1 is not installed here"),
                            ("1.2.0", "TensorRT-LLM 1.2.0 is installed here, but this project builds with 1.2.1"),
                            ("1.2.1rc2", "TensorRT-LLM 1.2.1rc2 is installed here")):
        with pytest.raises(BuildError, match=says) as ei:
            check_build_version(installed)
        assert ei.value.step == "preflight" and C2607 in str(ei.value) and "25.12" not in str(ei.value)


def test_build_refuses_another_installed_version_before_any_step(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "trtllm_version", lambda: "1.1.0")  # the probe, not tensorrt_llm itself
    with pytest.raises(BuildError, match="1.1.0 is installed here") as ei:
        run_build(make_plan(tiny_ckpt, "h100", "bf16"), tmp_path / "e", tmp_path / "w", {}, progress=lambda s: None)
    assert ei.value.step == "preflight" and not (tmp_path / "w" / "logs").exists()


def dry_run(tiny_ckpt, engine_dir, tp=1, pp=1):
    plan = make_plan(tiny_ckpt, "h200", "bf16", tp, pp)
    run_build(plan, engine_dir, engine_dir.with_name("work"), {"model": "fixture"}, dry_run=True,
              progress=lambda s: None)
    return json.loads((engine_dir / build.MANIFEST).read_text())


def test_a_dry_run_records_the_planned_version(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "trtllm_version", lambda: "1.1.0")  # installed or not, a dry run plans 1.2.1
    assert dry_run(tiny_ckpt, tmp_path / "eng")["tensorrt_llm_version"] == "1.2.1"


def test_the_manifest_records_the_version_it_is_given(tiny_ckpt, tmp_path):
    plan = make_plan(tiny_ckpt, "h200", "bf16")
    p = build.write_manifest(tmp_path / "e", plan, [], {}, True, 1.0, str(tiny_ckpt), "1.2.1")
    assert json.loads(p.read_text())["tensorrt_llm_version"] == "1.2.1"


def engine_config(engine_dir, version):
    (engine_dir / "config.json").write_text(json.dumps({"version": version, "pretrained_config": {},
                                                        "build_config": {}}))


def test_serving_checks_the_engine_and_the_installed_version(tiny_ckpt, tmp_path):
    eng = tmp_path / "eng"
    m = dry_run(tiny_ckpt, eng)
    check_serving_versions(eng, m, None)  # a CPU machine rendering: nothing installed, no engine yet
    check_serving_versions(eng, m, "1.2.1")
    engine_config(eng, "1.2.1")
    check_serving_versions(eng, m, "1.2.1")
    with pytest.raises(VersionMismatchError) as ei:
        check_serving_versions(eng, m, "1.1.0")
    assert "built with TensorRT-LLM 1.2.1" in str(ei.value) and "1.1.0 is installed here" in str(ei.value)
    assert C2607 in str(ei.value)
    engine_config(eng, "1.2.0")
    with pytest.raises(VersionMismatchError, match=r"config.json says TensorRT-LLM 1.2.0 .* says 1.2.1"):
        check_serving_versions(eng, m, None)


def test_an_older_manifest_note_is_read_as_its_version(tiny_ckpt, tmp_path):
    m = dry_run(tiny_ckpt, tmp_path / "eng") | {"tensorrt_llm_version": "1.2.1 (planned; not installed where this ran)"}
    check_serving_versions(tmp_path / "eng", m, "1.2.1")
    with pytest.raises(VersionMismatchError, match="records no tensorrt_llm_version"):
        check_serving_versions(tmp_path / "eng", {}, None)


def test_serve_refuses_an_engine_the_manifest_does_not_describe(tiny_ckpt, tmp_path, capsys):
    eng = tmp_path / "eng"
    dry_run(tiny_ckpt, eng, tp=2)
    engine_config(eng, "1.1.0")
    assert main(["serve", "--engine", "tensorrt_llm", "--engine-dir", str(eng), "--repo-dir", str(tmp_path / "repo"),
                 "--render-only"]) == 1
    assert "config.json says TensorRT-LLM 1.1.0" in capsys.readouterr().err and not (tmp_path / "repo").exists()


def test_serve_refuses_another_installed_version(tiny_ckpt, tmp_path):
    from ziya_trt.cli import build_parser
    from ziya_trt.cli.serve import config_from_manifest

    eng = tmp_path / "eng"
    dry_run(tiny_ckpt, eng)
    a = build_parser().parse_args(["serve", "--engine", "tensorrt_llm", "--engine-dir", str(eng)])
    assert config_from_manifest(a, installed_version=lambda: "1.2.1").world_size == 1
    with pytest.raises(VersionMismatchError, match=f"serve it in {C2607}"):
        config_from_manifest(a, installed_version=lambda: "1.2.0")


def test_the_installed_version_is_read_without_importing_tensorrt_llm(monkeypatch):
    import importlib.metadata
    import sys

    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "1.2.1" if name == "tensorrt_llm" else pytest.fail(name))
    assert build.trtllm_version() == "1.2.1" and "tensorrt_llm" not in sys.modules


def test_the_installed_version_without_metadata(monkeypatch, tmp_path):
    """Not installed: None. A source tree on the path (no metadata): its version.py, still not imported."""
    import importlib.machinery
    import importlib.metadata
    import importlib.util

    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert build.trtllm_version() is None
    src = tmp_path / "src"
    src.mkdir()
    (src / "__init__.py").write_text("raise RuntimeError('imported')\n")
    spec = importlib.machinery.ModuleSpec("tensorrt_llm", None, origin=str(src / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    assert build.trtllm_version() == "unknown"
    (src / "version.py").write_text('# comment\n__version__ = "1.2.1"\n')
    assert build.trtllm_version() == "1.2.1"
