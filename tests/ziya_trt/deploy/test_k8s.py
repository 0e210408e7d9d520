"""The Kubernetes manifests: every built-in object validates against the API's own schemas (kubernetes-validate,
strict: unknown fields are errors) for Kubernetes 1.30 and 1.37; the Prometheus Operator's objects, which it has
no schema for, against models generated from the operator's CRDs (cloudcoil-models-prometheus-operator); and the
objects agree with each other and with the server (GPUs, grace period, probes, ports, selectors)."""

import inspect
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ziya_trt.cli import build_parser, main
from ziya_trt.deploy import k8s
from ziya_trt.deploy.options import STARTUP_SLACK_S, K8sOptions, termination_grace_s
from ziya_trt.serving.config import ConfigError, ServeConfig
from ziya_trt.serving.triton.gauges import METRIC_FRONT_DOOR_INFLIGHT
from ziya_trt.serving.process.server import TritonServer
from ziya_trt.serving.process.supervisor import RESTART_READY_S

K8S_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}
POOL = json.loads((Path(__file__).parents[3] / "contracts" / "inference-pool-v1.json").read_text())["schema"]


def trtllm(world_size=1, **kw) -> ServeConfig:
    return ServeConfig(engine="tensorrt_llm", engine_dir="/engines/ziya2-fp8", tokenizer_dir="/engines/tokenizer",
                       world_size=world_size, **kw)


def reference(**kw) -> ServeConfig:
    return ServeConfig(engine="reference", model_dir="/models/ziya", tokenizer_dir="/models/ziya", **kw)


def opts(**kw) -> K8sOptions:
    return K8sOptions(**({"volume_claim": "ziya-engines"} | kw))


def by_kind(objs) -> dict:
    return {o["kind"]: o for o in objs}


def pod(objs) -> dict:
    return by_kind(objs)["Deployment"]["spec"]["template"]["spec"]


CASES = {
    "trtllm-1gpu": (trtllm(), opts()),
    "trtllm-tp4-hostpath-affinity-secret": (trtllm(4), opts(volume_claim=None, host_path="/srv/engines",
                                                            session_affinity=True, admin_key_secret="ziya-admin:key",
                                                            namespace="llm", monitor_labels=(("release", "prom"),))),
    "reference-podmonitor-no-hpa": (reference(), opts(monitor="podmonitor", max_replicas=0, replicas=2)),
    "reference-no-monitor": (reference(drain_timeout_s=3.0), opts(monitor="none", pre_stop_s=0, target_inflight=2.5)),
    "trtllm-inference-pool": (trtllm(), opts(inference_pool=True, namespace="llm", endpoint_picker_fail_open=True)),
}


@pytest.fixture(params=CASES, ids=list(CASES))
def case(request):
    cfg, o = CASES[request.param]
    return cfg, o, k8s.render(cfg, o)


# --- against the schemas -----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(case, version):
    _, _, objs = case
    checked = [o for o in objs if o["kind"] not in CRD_KINDS | {"InferencePool"}]
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= {o["kind"] for o in checked}
    for o in checked:
        assert kubernetes_validate.validate(o, version, strict=True) == version[:4]


def test_the_validator_refuses_what_is_wrong():
    dep = by_kind(k8s.render(trtllm(), opts()))["Deployment"]
    bad = json.loads(json.dumps(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = json.loads(json.dumps(dep))
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "92s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_prometheus_operator_objects_validate_against_its_crd_models(case):
    from cloudcoil.models.prometheus_operator import v1

    _, o, objs = case
    for obj in (x for x in objs if x["kind"] in CRD_KINDS):
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # why these need another validator
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
        model = getattr(v1, obj["kind"]).model_validate(obj)
        # the models ignore unknown fields: a round trip that loses nothing means there were none
        assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == obj
    assert any(x["kind"] in CRD_KINDS for x in objs) == (o.monitor != "none")


def test_crd_models_refuse_what_is_wrong():
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    sm = by_kind(k8s.render(trtllm(), opts()))["ServiceMonitor"]
    with pytest.raises(ValueError):
        ServiceMonitor.model_validate(sm | {"spec": sm["spec"] | {"endpoints": [{"port": "http", "interval": "15 s"}]}})
    with pytest.raises(ValueError):
        ServiceMonitor.model_validate(sm | {"spec": {"endpoints": sm["spec"]["endpoints"]}})  # no selector


@pytest.mark.parametrize("kind", ["servicemonitor", "podmonitor"])
def test_the_monitor_scrapes_tritons_metrics_port_and_the_http_ports_metrics(kind):
    """Triton's nv_* and the models' ziya_* series are on the metrics port; the OpenAI API's (api="openai") on
    the HTTP port's /metrics: both are scraped, on the ports the server really listens on."""
    from cloudcoil.models.prometheus_operator import v1

    objs = k8s.render(trtllm(), opts(monitor=kind))
    mon = objs[-1]
    ends = mon["spec"]["endpoints" if kind == "servicemonitor" else "podMetricsEndpoints"]
    assert [(e["port"], e["path"], e["interval"]) for e in ends] == [("metrics", "/metrics", "15s"),
                                                                     ("http", "/metrics", "15s")]
    c = pod(objs)["containers"][0]
    a = build_parser().parse_args(c["args"])
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (container_ports["metrics"], container_ports["http"]) == (a.metrics_port, a.http_port)
    if kind == "servicemonitor":  # it names the Service's ports, which lead to those container ports
        targets = {p["name"]: p["targetPort"] for p in by_kind(objs)["Service"]["spec"]["ports"]}
        assert (targets["metrics"], targets["http"]) == ("metrics", "http")
    validated = getattr(v1, mon["kind"]).model_validate(mon).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert validated == mon


# --- what the objects say ----------------------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_gpus_follow_the_world_size(world_size):
    p = pod(k8s.render(trtllm(world_size), opts()))
    res = p["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == str(world_size)
    assert p["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert p["containers"][0]["image"] == "ziya-trt:gpu"


def test_cpu_engines_ask_for_no_gpu():
    p = pod(k8s.render(reference(), opts()))
    res = p["containers"][0]["resources"]
    assert not any("gpu" in k for k in (*res["requests"], *res["limits"])) and "tolerations" not in p
    assert p["containers"][0]["image"] == "ziya-trt:cpu" and "--tritonserver" not in p["containers"][0]["args"]


@pytest.mark.parametrize("drain", [1.0, 20.0, 300.0])
@pytest.mark.parametrize("exit_timeout", [5, 30])
def test_grace_period_outlasts_the_drain(drain, exit_timeout):
    o = opts(exit_timeout_s=exit_timeout)
    p = pod(k8s.render(trtllm(drain_timeout_s=drain), o))
    grace = p["terminationGracePeriodSeconds"]
    assert grace == termination_grace_s(trtllm(drain_timeout_s=drain), o)
    # preStop pause, then the drain, then tritonserver's own exit timeout, all inside the grace period
    assert grace > o.pre_stop_s + drain + exit_timeout + 10
    assert p["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(o.pre_stop_s)]
    # the image's ENTRYPOINT runs (on the GPU image, NVIDIA's entrypoint in front of ziya-trt)
    assert "command" not in p["containers"][0] and p["containers"][0]["args"][0] == "serve"


def test_probes(case):
    _, o, objs = case
    c = pod(objs)["containers"][0]
    names = {p["name"] for p in c["ports"]}
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"} and "http" in names
    s = c["startupProbe"]
    # the launcher waits exactly the startup budget for the engine, and gives up before the kubelet would
    assert build_parser().parse_args(c["args"]).ready_timeout == o.startup_timeout_s
    assert s["periodSeconds"] * s["failureThreshold"] >= o.startup_timeout_s + STARTUP_SLACK_S
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > RESTART_READY_S  # a restart in progress is spared


def test_liveness_budget_tracks_the_launchers_restart_wait():
    assert inspect.signature(TritonServer.restart).parameters["ready_timeout_s"].default == RESTART_READY_S


def test_startup_budget_is_an_option():
    c = pod(k8s.render(trtllm(), opts(startup_timeout_s=1200)))["containers"][0]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 1200 + STARTUP_SLACK_S
    assert c["args"][c["args"].index("--ready-timeout") + 1] == "1200"


def test_ports_match_between_container_service_and_server_args(case):
    _, _, objs = case
    c = pod(objs)["containers"][0]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert container_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    svc = by_kind(objs)["Service"]["spec"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]} == {
        n: (p, n) for n, p in container_ports.items()}
    a = build_parser().parse_args(c["args"])  # the real `ziya-trt serve` parser takes every argument
    assert (a.http_port, a.grpc_port, a.metrics_port) == (8000, 8001, 8002) and a.host == "0.0.0.0"


def test_labels_and_selectors_agree(case):
    _, o, objs = case
    kinds = by_kind(objs)
    dep = kinds["Deployment"]
    sel = dep["spec"]["selector"]["matchLabels"]
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert sel.items() <= template_labels.items()
    assert kinds["Service"]["spec"]["selector"] == sel
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == sel
    (spread,) = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == sel
    for obj in objs:
        assert obj["metadata"]["labels"].items() >= sel.items()
        assert obj["metadata"].get("namespace") == o.namespace
    if "HorizontalPodAutoscaler" in kinds:
        ref = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", dep["metadata"]["name"])
    svc_ports = {p["name"] for p in kinds["Service"]["spec"]["ports"]}
    if "ServiceMonitor" in kinds:
        sm = kinds["ServiceMonitor"]
        assert sm["spec"]["selector"]["matchLabels"].items() <= kinds["Service"]["metadata"]["labels"].items()
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= svc_ports
        assert dict(o.monitor_labels).items() <= sm["metadata"]["labels"].items()
    if "PodMonitor" in kinds:
        pm = kinds["PodMonitor"]
        assert pm["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        container_ports = {p["name"] for p in pod(objs)["containers"][0]["ports"]}
        assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= container_ports


def test_the_pod_serves_the_configmaps_serve_config(case):
    cfg, o, objs = case
    cm = by_kind(objs)["ConfigMap"]
    served = ServeConfig.from_json(cm["data"]["serve_config.json"])
    assert served.to_json() == k8s.pod_config(cfg, o).to_json() and served.grpc_url is None
    p = pod(objs)
    c = p["containers"][0]
    a = build_parser().parse_args(c["args"])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert str(a.config) == f"{mounts['config']['mountPath']}/serve_config.json" and mounts["config"]["readOnly"]
    vols = {v["name"]: v for v in p["volumes"]}
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert mounts["model"]["readOnly"] and served.tokenizer_dir.is_relative_to(mounts["model"]["mountPath"])
    assert str(a.repo_dir).startswith(mounts["state"]["mountPath"] + "/")  # writable; the root file system is not
    assert c["securityContext"]["readOnlyRootFilesystem"] and p["securityContext"]["runAsNonRoot"]
    assert a.exit_timeout == o.exit_timeout_s


def test_the_pods_command_line_renders_the_repository(case, tmp_path, capsys):
    """`ziya-trt serve` with the pod's own arguments, the ConfigMap's file at a local path, and --render-only
    (no tritonserver is started): the config and every flag are accepted, and the repository is rendered."""
    _, _, objs = case
    (tmp_path / "serve_config.json").write_text(by_kind(objs)["ConfigMap"]["data"]["serve_config.json"])
    args = pod(objs)["containers"][0]["args"]
    local = {k8s.CONFIG_DIR + "/serve_config.json": str(tmp_path / "serve_config.json"),
             k8s.STATE_DIR + "/model_repo": str(tmp_path / "repo")}
    assert main([local.get(a, a) for a in args] + ["--render-only"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "repo")
    assert (tmp_path / "repo" / "ziya" / "config.pbtxt").exists()


def test_volume_is_a_claim_or_a_host_path():
    vols = {v["name"]: v for v in pod(k8s.render(trtllm(), opts()))["volumes"]}
    assert vols["model"]["persistentVolumeClaim"] == {"claimName": "ziya-engines", "readOnly": True}
    vols = {v["name"]: v for v in pod(k8s.render(trtllm(), opts(volume_claim=None, host_path="/srv/e")))["volumes"]}
    assert vols["model"]["hostPath"] == {"path": "/srv/e", "type": "Directory"}


def test_a_changed_config_rolls_the_pods():
    def digest(cfg):
        return by_kind(k8s.render(cfg, opts()))["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert digest(trtllm()) == digest(trtllm()) != digest(trtllm(max_queue_size=8))


def test_admin_key_from_a_secret_is_a_file_never_an_argument():
    p = pod(k8s.render(trtllm(), opts(admin_key_secret="ops-keys:ziya")))
    c = p["containers"][0]
    a = build_parser().parse_args(c["args"])
    assert a.admin_key is None and str(a.admin_key_file) == "/var/run/secrets/ziya-trt/admin_key" and "env" not in c
    assert {"name": "admin-key", "mountPath": "/var/run/secrets/ziya-trt", "readOnly": True} in c["volumeMounts"]
    vol = next(v for v in p["volumes"] if v["name"] == "admin-key")
    assert vol["secret"] == {"secretName": "ops-keys", "defaultMode": 0o440, "items": [{"key": "ziya", "path": "admin_key"}]}
    p = pod(k8s.render(trtllm(), opts()))
    c = p["containers"][0]
    assert "--admin-key" not in c["args"] and "--admin-key-file" not in c["args"]
    assert all(v["name"] != "admin-key" for v in p["volumes"])


def test_autoscaler_on_the_front_door_gauge_through_the_adapter_rule():
    kinds = by_kind(k8s.render(trtllm(max_batch_size=16), opts(replicas=2, max_replicas=6)))
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == METRIC_FRONT_DOOR_INFLIGHT
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "16"}  # default: the engine's slots
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6) and "replicas" not in kinds["Deployment"]["spec"]
    (rule,) = k8s.adapter_rules()["rules"]
    assert rule["name"]["as"] == METRIC_FRONT_DOOR_INFLIGHT
    assert rule["seriesQuery"].startswith(METRIC_FRONT_DOOR_INFLIGHT + "{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert "<<.Series>>" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]
    target = by_kind(k8s.render(trtllm(), opts(target_inflight=2.5)))["HorizontalPodAutoscaler"]
    assert target["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "2500m"
    no_hpa = by_kind(k8s.render(trtllm(), opts(max_replicas=0, replicas=3)))
    assert "HorizontalPodAutoscaler" not in no_hpa and no_hpa["Deployment"]["spec"]["replicas"] == 3


def test_session_affinity_is_an_option():
    assert "sessionAffinity" not in by_kind(k8s.render(trtllm(), opts()))["Service"]["spec"]
    svc = by_kind(k8s.render(trtllm(), opts(session_affinity=True, affinity_timeout_s=600)))["Service"]["spec"]
    assert svc["sessionAffinity"] == "ClientIP"
    assert svc["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}


def test_yaml_round_trips_and_carries_the_adapter_rule():
    cfg, o = CASES["trtllm-1gpu"]
    text = k8s.to_yaml(cfg, o)
    assert list(yaml.safe_load_all(text)) == k8s.render(cfg, o)
    comment = [ln[2:] for ln in text.split("\n---", 1)[0].splitlines() if ln.startswith("#   ")]
    assert yaml.safe_load("\n".join(comment)) == k8s.adapter_rules()["rules"]
    assert "serve_config.json: |" in text  # the config stays readable


def test_the_inference_pool_validates_against_its_crds_schema_and_routes_to_the_http_port(case):
    import jsonschema

    _, o, objs = case
    pools = [x for x in objs if x["kind"] == "InferencePool"]
    assert len(pools) == int(o.inference_pool)
    for pool in pools:
        jsonschema.validate(pool, POOL)
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # why it needs its CRD's schema
            kubernetes_validate.validate(pool, K8S_VERSIONS[-1], strict=True)
        spec = pool["spec"]
        assert spec["selector"]["matchLabels"] == by_kind(objs)["Deployment"]["spec"]["selector"]["matchLabels"]
        assert spec["targetPorts"] == [{"number": k8s.PORTS["http"]}]  # the OpenAI API and the engine's /metrics
        http = next(p for p in pod(objs)["containers"][0]["ports"] if p["name"] == "http")
        assert http["containerPort"] == k8s.PORTS["http"]
        assert spec["endpointPickerRef"] == {"name": f"{o.name}-epp", "kind": "Service", "port": {"number": 9002},
                                             "failureMode": "FailOpen" if o.endpoint_picker_fail_open else "FailClose"}


def test_the_pools_schema_refuses_what_is_wrong():
    import jsonschema

    pool = k8s.inference_pool(opts(inference_pool=True))
    for bad in (
        {"targetPorts": []},
        {"targetPorts": [{"number": 8000}, {"number": 8000}]},
        {"selector": {"matchLabels": {}}},
        {"endpointPickerRef": {"name": "epp"}},  # a Service needs its port
        {"endpointPickerRef": {"name": "epp", "port": {"number": 9002}, "failureMode": "Open"}},
        {"targetPortNumber": 8000},  # the pre-v1 field
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(pool | {"spec": pool["spec"] | bad}, POOL)


def test_the_pool_header_names_the_metrics_the_picker_reads():
    cfg, o = CASES["trtllm-inference-pool"]
    text = k8s.to_yaml(cfg, o)
    head = text.split("\n---", 1)[0]
    assert "InferencePool" in head and "llm" in text
    for name in k8s.PICKER_METRICS.values():
        assert name in head


# --- what is refused ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [
    ({"volume_claim": None}, "exactly one volume"),
    ({"host_path": "/srv"}, "exactly one volume"),
    ({"volume_claim": None, "host_path": "srv"}, "must be absolute"),
    ({"name": "Ziya_TRT"}, "DNS-1035"),
    ({"replicas": 3, "max_replicas": 2}, "below replicas"),
    ({"monitor": "prometheus"}, "not one of"),
    ({"memory": "64GB"}, "not a Kubernetes quantity"),
    ({"admin_key_secret": "Bad Name"}, "NAME or NAME:KEY"),
    ({"monitor_labels": (("release", "has space"),)}, "not a valid label"),
    ({"target_inflight": 0.0}, "must be > 0"),
    ({"endpoint_picker_port": 0}, "not in 1..65535"),
])
def test_bad_options_are_refused_with_the_reason(kw, message):
    with pytest.raises(ConfigError, match=message):
        opts(**kw)


def test_paths_outside_the_volume_are_refused():
    cfg = ServeConfig(engine="tensorrt_llm", engine_dir="/home/me/engines/ziya2", tokenizer_dir="/home/me/tok")
    with pytest.raises(ConfigError, match="engine_dir '/home/me/engines/ziya2' is not under the volume's mount "
                                          "/engines; tokenizer_dir '/home/me/tok' is not under"):
        k8s.render(cfg, opts())
    with pytest.raises(ConfigError, match="tokenizer_dir 'tok' is not under"):
        k8s.render(ServeConfig(engine="synthetic", tokenizer_dir="tok"), opts())
    assert k8s.render(cfg, opts(mount_path="/home/me")) is not None  # unless the volume is mounted there


def test_a_world_size_below_one_is_refused():
    with pytest.raises(ConfigError, match="world_size 0"):
        k8s.render(trtllm(0), opts())
