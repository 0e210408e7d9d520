import json
import time
from pathlib import Path

import pytest

from engine_build.build import BuildError, MANIFEST, read_manifest, run_build, trtllm_version
from engine_build.fetch import DEFAULT_MODEL, FetchError, fetch_checkpoint
from engine_build.plan import make_plan
from engine_build.spec import ZIYA2_13B_CHAT, ModelSpec
from ziya_trt.cli import main


def test_local_directory_is_used_as_is(tiny_ckpt):
    assert fetch_checkpoint(str(tiny_ckpt)) == tiny_ckpt


def test_modelscope_local_cache(tiny_ckpt, tmp_path):
    """modelscope's snapshot_download, offline, against a cache laid out as it lays it out."""
    root = tmp_path / "models" / "Fengshenbang--Ziya2-13B-Chat"
    snap = root / "snapshots" / "rev1"
    snap.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(tiny_ckpt, snap)
    (root / "refs").mkdir()
    (root / "refs" / "master").write_text("rev1")
    got = fetch_checkpoint("Fengshenbang/Ziya2-13B-Chat", cache_dir=tmp_path, offline=True)
    assert got == snap and (got / "config.json").exists()


def test_offline_miss_is_a_clear_error_not_a_hang(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="local ModelScope cache") as ei:
        fetch_checkpoint("Fengshenbang/Ziya2-13B-Chat", revision="v1", cache_dir=tmp_path, offline=True)
    assert time.monotonic() - t0 < 10 and "Pass a local checkpoint directory" in str(ei.value)


def test_dry_run_writes_manifest(tiny_ckpt, tmp_path):
    plan = make_plan(tiny_ckpt, "h200", "fp8", 2)
    m = run_build(plan, tmp_path / "engine", tmp_path / "work", {"model": "fixture"}, dry_run=True,
                  progress=lambda s: None)
    data = json.loads(m.read_text())
    assert data["built"] is False and data["plan"]["tp"] == 2 and data["world_size"] == 2
    assert data["commands"][0][1].endswith("quantize.py") and data["commands"][1][0] == "trtllm-build"
    assert set(data["source_files"]) >= {"config.json", "tokenizer.model", "model.safetensors"}
    assert len(data["source_files"]["config.json"]) == 64
    assert read_manifest(tmp_path / "engine")["dtype"] == "fp8"


@pytest.mark.skipif(trtllm_version() is not None, reason="TensorRT-LLM is installed here")
def test_build_without_tensorrt_llm_says_so(tiny_ckpt, tmp_path):
    with pytest.raises(BuildError, match="TensorRT-LLM 1.2.1 is not installed") as ei:
        run_build(make_plan(tiny_ckpt, "h100", "bf16"), tmp_path / "e", tmp_path / "w", {}, progress=lambda s: None)
    assert ei.value.step == "preflight"


def test_plan_that_does_not_fit_is_not_built(tiny_ckpt, tmp_path):
    plan = make_plan(tiny_ckpt, "a100-80gb", "fp8")
    with pytest.raises(BuildError, match="does not fit"):
        run_build(plan, tmp_path / "e", tmp_path / "w", {}, dry_run=True)


def test_serve_renders_tensorrt_llm_config_from_the_manifest(tiny_ckpt, tmp_path, capsys):
    assert main(["plan", "--model", str(tiny_ckpt), "--gpu", "h200", "--dtype", "fp8", "--tp", "2",
                 "--isl", "1024", "--osl", "256", "--out", str(tmp_path / "plan.json")]) == 0
    assert main(["build", "--plan", str(tmp_path / "plan.json"), "--engine-dir", str(tmp_path / "eng"),
                 "--dry-run"]) == 0
    assert (tmp_path / "eng" / MANIFEST).exists()
    assert main(["serve", "--engine", "tensorrt_llm", "--engine-dir", str(tmp_path / "eng"),
                 "--repo-dir", str(tmp_path / "repo"), "--render-only"]) == 0
    text = (tmp_path / "repo" / "tensorrt_llm" / "config.pbtxt").read_text()
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert f"max_batch_size: {plan['max_batch_size']}" in text
    assert str((tmp_path / "eng").resolve()) in text and 'backend: "tensorrtllm"' in text
    door = (tmp_path / "repo" / "ziya" / "config.pbtxt").read_text()
    assert '"1024"' in door and '"1280"' in door and str(tiny_ckpt) not in door  # no paths for clients to read
    from ziya_trt.serving.config import ServeConfig

    assert ServeConfig.for_model({"model_repository": str(tmp_path / "repo" / "ziya")}).tokenizer_dir == tiny_ckpt


def test_mpi_launch_command_for_two_ranks(tmp_path):
    """The whole command, per parallel layout, is in tests/ziya_trt/serving/process/test_launch.py."""
    from ziya_trt.serving.process.multi_gpu import mpi_command
    from ziya_trt.serving.process.server import Ports, TritonInstall, TritonServer

    srv = TritonServer(tmp_path, Ports(1, 2, 3), install=TritonInstall(Path("/opt/tritonserver/bin/tritonserver"),
                                                                       Path("/opt/tritonserver/backends")))
    cmd = mpi_command(srv, 2)
    assert cmd[:2] == ["mpirun", "--allow-run-as-root"] and cmd.count("-n") == 2 and ":" in cmd
    rank1 = cmd[cmd.index(":") + 1:]
    assert "--allow-http=false" in rank1 and not any(a.startswith("--http-port") for a in rank1)
    assert rank1[-4:-2] == ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]  # only the engine
    rank0 = cmd[: cmd.index(":")]
    shm = [[x for x in r if x.startswith("--backend-config=python,shm-region-prefix-name=")] for r in (rank0, rank1)]
    assert len(shm[0]) == len(shm[1]) == 1 and shm[0] != shm[1] and shm[1][0].endswith("1_")  # a prefix per rank


# --- build from a plan made without a checkpoint; a relative --model ------------------------------------


def _cache_with(ckpt: Path, cache: Path) -> Path:
    """``ckpt`` laid out in a ModelScope cache as Fengshenbang/Ziya2-13B-Chat (as snapshot_download lays it out)."""
    import shutil

    root = cache / "models" / "Fengshenbang--Ziya2-13B-Chat"
    snap = root / "snapshots" / "rev1"
    shutil.copytree(ckpt, snap)
    (root / "refs").mkdir()
    (root / "refs" / "master").write_text("rev1")
    return snap


def _builtin_style_plan(ckpt: Path, path: Path) -> Path:
    """A plan as `plan` writes it from a built-in shape (empty model_dir, model_id set), with ``ckpt``'s shape."""
    plan = make_plan(None, "h200", spec=ModelSpec.from_dir(ckpt), model_id=DEFAULT_MODEL)
    assert plan.model_dir == "" and plan.fits
    return plan.save(path)


def test_build_of_a_builtin_shape_plan_fetches_its_model(tiny_ckpt, tmp_path):
    snap = _cache_with(tiny_ckpt, tmp_path / "cache")
    plan = _builtin_style_plan(tiny_ckpt, tmp_path / "plan.json")
    assert main(["build", "--plan", str(plan), "--cache-dir", str(tmp_path / "cache"),
                 "--engine-dir", str(tmp_path / "eng"), "--dry-run"]) == 0
    m = read_manifest(tmp_path / "eng")
    assert m["plan"]["model_dir"] == m["tokenizer_dir"] == m["source"]["local_dir"] == str(snap.resolve())
    assert m["source"]["model"] == "Fengshenbang/Ziya2-13B-Chat" and "config.json" in m["source_files"]
    assert m["commands"][0][m["commands"][0].index("--model_dir") + 1] == str(snap.resolve())


def test_build_of_a_builtin_shape_plan_not_fetched_says_what_to_run(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert main(["plan", "--cache-dir", cache, "--gpu", "h200", "--out", str(tmp_path / "plan.json")]) == 0
    capsys.readouterr()
    assert main(["build", "--plan", str(tmp_path / "plan.json"), "--cache-dir", cache,
                 "--engine-dir", str(tmp_path / "eng"), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "planned from the built-in shape of Fengshenbang/Ziya2-13B-Chat" in err
    assert f"`ziya-trt fetch --model Fengshenbang/Ziya2-13B-Chat --cache-dir {cache}`" in err
    assert not (tmp_path / "eng").exists()


def test_build_of_a_builtin_shape_plan_refuses_a_checkpoint_of_another_shape(tiny_ckpt, tmp_path):
    from engine_build.cli import BuildPlanError, _plan_checkpoint
    from engine_build.plan import BuildPlan
    from ziya_trt.cli import build_parser

    snap = _cache_with(tiny_ckpt, tmp_path / "cache")
    plan = make_plan(None, "h200", spec=ZIYA2_13B_CHAT, model_id=DEFAULT_MODEL).save(tmp_path / "plan.json")
    args = build_parser().parse_args(["build", "--plan", str(plan), "--cache-dir", str(tmp_path / "cache"),
                                      "--dry-run"])
    with pytest.raises(BuildPlanError, match="does not have the shape") as ei:
        _plan_checkpoint(args, BuildPlan.load(plan))
    assert "hidden_size 5120 planned" in str(ei.value)
    assert f"`ziya-trt plan --model {snap.resolve()}`" in str(ei.value)


def test_build_resolves_a_relative_model(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_ckpt.parent)
    assert main(["build", "--model", tiny_ckpt.name, "--gpu", "h200", "--engine-dir", str(tmp_path / "eng"),
                 "--dry-run"]) == 0
    m = read_manifest(tmp_path / "eng")
    assert m["tokenizer_dir"] == m["source"]["local_dir"] == m["plan"]["model_dir"] == str(tiny_ckpt.resolve())


# --- where TensorRT-LLM's example scripts are found -----------------------------------------------------


def _image_26_07(root: Path) -> Path:
    """``root`` laid out as nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 lays out the scripts: /app/examples
    (tensorrtllm_backend's Dockerfile.triton.trt_llm_backend: WORKDIR /app, COPY examples), no source tree."""
    from engine_build.commands import CONVERT, QUANTIZE

    for rel in (CONVERT, QUANTIZE):
        (root / "app" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "app" / rel).write_text("")
    return root / "app"


def _under(root: Path) -> list[Path]:
    """The default search list, as it would be with ``root`` for /."""
    from engine_build.build import EXAMPLES_CANDIDATES

    return [root / c.relative_to("/") for c in EXAMPLES_CANDIDATES]


def test_dry_run_build_finds_the_26_07_containers_scripts(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from engine_build.cli import run_build as cli_build
    from ziya_trt.cli import build_parser

    monkeypatch.delenv("TRTLLM_SOURCE", raising=False)
    app = _image_26_07(tmp_path / "image")
    for dtype, script in (("bf16", "examples/models/core/llama/convert_checkpoint.py"),
                          ("fp8", "examples/quantization/quantize.py")):
        eng = tmp_path / f"eng-{dtype}"
        args = build_parser().parse_args(["build", "--model", str(tiny_ckpt), "--gpu", "h200", "--dtype", dtype,
                                          "--engine-dir", str(eng), "--dry-run"])
        assert cli_build(args, source_candidates=_under(tmp_path / "image")) == 0
        commands = read_manifest(eng)["commands"]
        assert commands[0][:2] == ["python3", str(app / script)] and commands[1][0] == "trtllm-build"
        assert str(app / script) in capsys.readouterr().out


def test_a_named_examples_directory_is_used_or_refused(tiny_ckpt, tmp_path, monkeypatch):
    from engine_build.build import find_source_tree

    app = _image_26_07(tmp_path / "image")
    monkeypatch.delenv("TRTLLM_SOURCE", raising=False)
    assert find_source_tree(None, _under(tmp_path / "empty")) is None
    assert find_source_tree(app, _under(tmp_path / "empty")) == app
    monkeypatch.setenv("TRTLLM_SOURCE", str(app))
    assert find_source_tree(None, _under(tmp_path / "empty")) == app
    (app / "examples/models/core/llama/convert_checkpoint.py").unlink()  # quantize.py alone is not enough
    with pytest.raises(BuildError, match="TRTLLM_SOURCE .* has no examples/models/core/llama/convert_checkpoint.py"):
        find_source_tree(None, _under(tmp_path / "image"))
    with pytest.raises(BuildError, match="--trtllm-source"):
        find_source_tree(app, [])
    monkeypatch.delenv("TRTLLM_SOURCE")
    assert find_source_tree(None, _under(tmp_path / "image")) is None


def test_dry_run_without_the_scripts_says_where_it_looked(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.delenv("TRTLLM_SOURCE", raising=False)
    said = []
    m = run_build(make_plan(tiny_ckpt, "h200", "bf16"), tmp_path / "e", tmp_path / "w", {}, dry_run=True,
                  progress=said.append, source_candidates=_under(tmp_path))
    assert json.loads(m.read_text())["commands"][0][1] == "examples/models/core/llama/convert_checkpoint.py"
    assert "cannot find TensorRT-LLM's examples/" in said[0] and str(tmp_path / "app") in said[0]
