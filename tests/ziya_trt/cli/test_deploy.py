"""``ziya-trt deploy k8s``: a ServeConfig file in, every manifest out; mistakes are one clean line."""

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from ziya_trt.cli import main
from ziya_trt.serving.config import ServeConfig


@pytest.fixture
def config_file(tmp_path):
    cfg = ServeConfig(engine="tensorrt_llm", engine_dir="/engines/ziya2-fp8", tokenizer_dir="/engines/tokenizer",
                      world_size=2, max_batch_size=32, drain_timeout_s=45.0)
    return cfg.write(tmp_path / "serve_config.json")


def test_renders_every_object_to_a_file(config_file, tmp_path, capsys):
    out = tmp_path / "ziya.yaml"
    assert main(["deploy", "k8s", "--config", str(config_file), "--volume-claim", "ziya-engines", "--namespace",
                 "llm", "--max-replicas", "3", "--monitor-label", "release=prometheus",
                 "--admin-key-secret", "ziya-admin", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    objs = list(yaml.safe_load_all(out.read_text()))
    assert [o["kind"] for o in objs] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                         "HorizontalPodAutoscaler", "ServiceMonitor"]
    for o in objs[:-1]:
        kubernetes_validate.validate(o, "1.37.0", strict=True)
    dep = objs[1]["spec"]["template"]["spec"]
    assert dep["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert dep["terminationGracePeriodSeconds"] > 45
    assert objs[-1]["metadata"]["labels"]["release"] == "prometheus"
    assert ServeConfig.from_json(objs[0]["data"]["serve_config.json"]).drain_timeout_s == 45.0


def test_the_inference_pool_options(config_file, capsys):
    assert main(["deploy", "k8s", "--config", str(config_file), "--volume-claim", "ziya-engines", "--inference-pool",
                 "--endpoint-picker", "pool-epp", "--endpoint-picker-port", "9100", "--endpoint-picker-fail-open"]) == 0
    pool = list(yaml.safe_load_all(capsys.readouterr().out))[-1]
    assert pool["kind"] == "InferencePool"
    assert pool["spec"]["endpointPickerRef"] == {"name": "pool-epp", "kind": "Service", "port": {"number": 9100},
                                                 "failureMode": "FailOpen"}


def test_writes_to_standard_output(config_file, capsys):
    assert main(["deploy", "k8s", "--config", str(config_file), "--host-path", "/srv/engines", "--max-replicas", "0",
                 "--monitor", "none"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Rendered by `ziya-trt deploy k8s`")
    kinds = [o["kind"] for o in yaml.safe_load_all(text)]
    assert kinds == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]


@pytest.mark.parametrize("argv, message", [
    ([], "give exactly one volume"),
    (["--volume-claim", "a", "--host-path", "/b"], "give exactly one volume"),
    (["--volume-claim", "a", "--mount-path", "/models"], "engine_dir '/engines/ziya2-fp8' is not under"),
    (["--volume-claim", "a", "--monitor-label", "release"], "is not KEY=VALUE"),
    (["--volume-claim", "a", "--replicas", "0"], "replicas must be >= 1"),
])
def test_mistakes_are_clean_errors(config_file, capsys, argv, message):
    assert main(["deploy", "k8s", "--config", str(config_file), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_a_missing_or_broken_config_is_a_clean_error(tmp_path, capsys):
    assert main(["deploy", "k8s", "--config", str(tmp_path / "nope.json"), "--volume-claim", "a"]) == 1
    assert "cannot read nope.json" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"engine": "tensorrt_llm", "tokenizer_dir": "/t"}')
    assert main(["deploy", "k8s", "--config", str(tmp_path / "bad.json"), "--volume-claim", "a"]) == 1
    assert "needs engine_dir" in capsys.readouterr().err


def test_deploy_without_a_target_prints_its_help(capsys):
    assert main(["deploy"]) == 2
    assert "k8s" in capsys.readouterr().out


def test_help_from_the_entry_point():
    out = subprocess.run([sys.executable, "-m", "ziya_trt.cli", "deploy", "k8s", "--help"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0
    for flag in ("--config", "--volume-claim", "--host-path", "--startup-timeout", "--max-replicas",
                 "--target-inflight", "--session-affinity", "--admin-key-secret", "--monitor"):
        assert flag in out.stdout
