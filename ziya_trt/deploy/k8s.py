"""Kubernetes manifests for ``ziya-trt serve``, rendered from its ``ServeConfig`` and the ``K8sOptions``.

Pure functions, one per object, each returning the object as a plain dict; ``render`` returns them all and
``to_yaml`` writes them as one multi-document file. The pod runs ``ziya-trt serve --config`` on the ConfigMap's
copy of the ``ServeConfig``, so the served model is exactly the config rendered here.
"""

from __future__ import annotations

from pathlib import Path

import hashlib
import math
from importlib import metadata

import yaml

from ..serving.config import EngineKind, ServeConfig
from ..serving.process.supervisor import RESTART_READY_S  # a supervised restart's wait: liveness outlasts it
from ..serving.triton.gauges import METRIC_FRONT_DOOR_INFLIGHT
from .options import (
    STARTUP_SLACK_S,
    TRITONSERVER,
    K8sOptions,
    check_paths,
    gpus,
    termination_grace_s,
)

PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
CONFIG_DIR = "/etc/ziya-trt"
CONFIG_FILE = "serve_config.json"
STATE_DIR = "/var/lib/ziya-trt"  # the rendered repository, the log, the generated operator key
UID = 1000  # the images' user (the NGC image's triton-server, ziya in the CPU image)
CONTAINER = "server"
READY_PATH, LIVE_PATH = "/v2/health/ready", "/v2/health/live"
SCRAPE_INTERVAL = "15s"
ADMIN_KEY_DIR = "/var/run/secrets/ziya-trt"  # the operator key from a Secret, as a file (not inside CONFIG_DIR:
# that is a read-only ConfigMap mount, where the kubelet could not make a mount point)
ADMIN_KEY_FILE = f"{ADMIN_KEY_DIR}/admin_key"


def version() -> str:
    try:
        return metadata.version("ziya-trt")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def selector_labels(opts: K8sOptions) -> dict[str, str]:
    """What every selector matches: stable across versions (a Deployment's selector cannot change)."""
    return {"app.kubernetes.io/name": "ziya-trt", "app.kubernetes.io/instance": opts.name}


def labels(opts: K8sOptions) -> dict[str, str]:
    return selector_labels(opts) | {"app.kubernetes.io/component": "server", "app.kubernetes.io/version": version(),
                                    "app.kubernetes.io/managed-by": "ziya-trt"}


def _meta(opts: K8sOptions, name: str | None = None, extra_labels: dict | None = None) -> dict:
    m = {"name": name or opts.name}
    if opts.namespace:
        m["namespace"] = opts.namespace
    m["labels"] = labels(opts) | (extra_labels or {})
    return m


def pod_config(cfg: ServeConfig, opts: K8sOptions) -> ServeConfig:
    """The config the pod serves: its paths on the mounted volume; the gRPC address left to ``ziya-trt serve``;
    the launcher's waits those the pod spec is derived from (``serve_args`` passes the same as flags)."""
    check_paths(cfg, opts.mount_for(cfg))
    gpus(cfg)
    return cfg.with_(grpc_url=None, supervisor={"exit_timeout_s": opts.exit_timeout_s,
                                                "ready_timeout_s": float(opts.startup_timeout_s)})


# --- the workload ------------------------------------------------------------------------------------------
def config_map(cfg: ServeConfig, opts: K8sOptions) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(opts, f"{opts.name}-config"),
            "data": {CONFIG_FILE: cfg.to_json() + "\n"}}


def serve_args(cfg: ServeConfig, opts: K8sOptions) -> list[str]:
    args = ["serve", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}",
            # every interface of the pod's own network namespace: the Service reaches it there
            "--host", "0.0.0.0",
            "--http-port", str(PORTS["http"]), "--grpc-port", str(PORTS["grpc"]),
            "--metrics-port", str(PORTS["metrics"]),
            "--repo-dir", f"{STATE_DIR}/model_repo", "--exit-timeout", str(opts.exit_timeout_s),
            # the launcher waits for the engine as long as the startup probe allows (less its slack)
            "--ready-timeout", str(opts.startup_timeout_s)]
    if cfg.engine is EngineKind.TENSORRT_LLM:
        args += ["--tritonserver", TRITONSERVER]
    if opts.admin_secret():  # a file from the Secret: the key is in no process's arguments
        args += ["--admin-key-file", ADMIN_KEY_FILE]
    return args


def probes(opts: K8sOptions) -> dict:
    """Startup: ``startup_timeout_s`` (what ``serve --ready-timeout`` waits for the engine to load) plus
    ``STARTUP_SLACK_S``. Readiness: Triton's ready, which the launcher turns false while it drains or restarts
    tritonserver. Liveness: Triton's live, with a budget longer than a supervised restart's wait, so a restart
    in progress is not killed."""
    def get(path, period, failures, timeout):
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout,
                "failureThreshold": failures}

    live_failures = math.ceil((RESTART_READY_S + 60) / 10)
    return {"startupProbe": get(READY_PATH, 10, math.ceil((opts.startup_timeout_s + STARTUP_SLACK_S) / 10), 5),
            "readinessProbe": get(READY_PATH, 5, 2, 3),
            "livenessProbe": get(LIVE_PATH, 10, live_failures, 5)}


def resources(cfg: ServeConfig, opts: K8sOptions) -> dict:
    mem = opts.memory_for(cfg)
    req, lim = {"cpu": opts.cpu_for(cfg), "memory": mem}, {"memory": mem}
    n = gpus(cfg)
    if n:
        req[opts.gpu_resource] = lim[opts.gpu_resource] = str(n)
    return {"requests": req, "limits": lim}


def container(cfg: ServeConfig, opts: K8sOptions) -> dict:
    mount = opts.mount_for(cfg)
    c = {
        "name": CONTAINER,
        "image": opts.image_for(cfg),
        "imagePullPolicy": "IfNotPresent",
        # no "command": the image's ENTRYPOINT runs (the GPU image's keeps NVIDIA's entrypoint, which sets up CUDA
        # forward compatibility, in front of ziya-trt; a pod command would replace it)
        "args": serve_args(cfg, opts),
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in PORTS.items()],
        "resources": resources(cfg, opts),
        **probes(opts),
        # endpoints and proxies drop the pod before the drain starts refusing requests
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(opts.pre_stop_s)]}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "model", "mountPath": mount, "readOnly": True},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if opts.admin_secret():
        c["volumeMounts"].append({"name": "admin-key", "mountPath": ADMIN_KEY_DIR, "readOnly": True})
    if not opts.pre_stop_s:
        del c["lifecycle"]
    return c


def volumes(opts: K8sOptions) -> list[dict]:
    if opts.volume_claim:
        model = {"name": "model", "persistentVolumeClaim": {"claimName": opts.volume_claim, "readOnly": True}}
    else:
        model = {"name": "model", "hostPath": {"path": opts.host_path, "type": "Directory"}}
    out = [model,
           {"name": "config", "configMap": {"name": f"{opts.name}-config"}},
           {"name": "state", "emptyDir": {}},
           {"name": "tmp", "emptyDir": {}},
           {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}}]
    secret = opts.admin_secret()
    if secret:  # readable by the pod's group (fsGroup) only
        out.append({"name": "admin-key", "secret": {"secretName": secret[0], "defaultMode": 0o440,
                                                    "items": [{"key": secret[1], "path": Path(ADMIN_KEY_FILE).name}]}})
    return out


def deployment(cfg: ServeConfig, opts: K8sOptions) -> dict:
    pod = {
        "terminationGracePeriodSeconds": termination_grace_s(cfg, opts),
        # the pause container is PID 1 and reaps what a dead tritonserver leaves (its python backend stubs)
        "shareProcessNamespace": True,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,  # the server never calls the Kubernetes API
        # replicas on different nodes where they can be: one node's loss or drain takes one replica
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": selector_labels(opts)}}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container(cfg, opts)],
        "volumes": volumes(opts),
    }
    if gpus(cfg):
        pod["tolerations"] = [{"key": opts.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    digest = hashlib.sha256(cfg.to_json().encode()).hexdigest()
    spec = {
        "revisionHistoryLimit": 3,
        # a new pod is ready before an old one goes: no capacity lost, but it needs one spare pod's GPUs
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "selector": {"matchLabels": selector_labels(opts)},
        "template": {"metadata": {"labels": labels(opts),
                                  # a changed ServeConfig rolls the pods
                                  "annotations": {"ziya-trt/serve-config-sha256": digest}},
                     "spec": pod},
    }
    if not opts.max_replicas:  # with an autoscaler, it owns the replica count
        spec = {"replicas": opts.replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(opts), "spec": spec}


# --- around it ---------------------------------------------------------------------------------------------
def service(opts: K8sOptions) -> dict:
    proto = {"http": "http", "grpc": "kubernetes.io/h2c", "metrics": "http"}
    spec = {"type": "ClusterIP", "selector": selector_labels(opts),
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP", "appProtocol": proto[n]}
                      for n, p in PORTS.items()]}
    if opts.session_affinity:
        spec |= {"sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": opts.affinity_timeout_s}}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(opts), "spec": spec}


def disruption_budget(opts: K8sOptions) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(opts),
            "spec": {"maxUnavailable": opts.max_unavailable, "selector": {"matchLabels": selector_labels(opts)}}}


def quantity(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{round(v * 1000)}m"


def autoscaler(cfg: ServeConfig, opts: K8sOptions) -> dict:
    """On requests in flight at the text front door, per pod, through prometheus-adapter (``adapter_rules``).
    Slow to grow and slower to shrink: a new pod loads its engine for minutes."""
    target = {"type": "AverageValue", "averageValue": quantity(opts.target_for(cfg))}
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(opts),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": opts.name},
            "minReplicas": opts.replicas, "maxReplicas": opts.max_replicas,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": METRIC_FRONT_DOOR_INFLIGHT}, "target": target}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 60,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
                "scaleDown": {"stabilizationWindowSeconds": 600,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
            },
        },
    }


def monitor(opts: K8sOptions) -> dict:
    """Prometheus Operator: Triton's series and the ziya_* gauges on the metrics port, the OpenAI API's on HTTP."""
    ends = [{"port": "metrics", "path": "/metrics", "interval": SCRAPE_INTERVAL},
            {"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL}]
    meta = _meta(opts, extra_labels=dict(opts.monitor_labels))
    if opts.monitor == "podmonitor":
        spec = {"selector": {"matchLabels": selector_labels(opts)}, "podMetricsEndpoints": ends}
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta, "spec": spec}
    spec = {"selector": {"matchLabels": selector_labels(opts)}, "endpoints": ends}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta, "spec": spec}


def adapter_rules() -> dict:
    """The prometheus-adapter rule that serves the autoscaler's metric (custom.metrics.k8s.io): the gauge summed
    over the pod's front-door models and instances."""
    return {"rules": [{
        "seriesQuery": f'{METRIC_FRONT_DOOR_INFLIGHT}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{METRIC_FRONT_DOOR_INFLIGHT}$", "as": METRIC_FRONT_DOOR_INFLIGHT},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
    }]}


INFERENCE_POOL_API = "inference.networking.k8s.io/v1"  # Gateway API Inference Extension, v1 (GA since 1.0)
# what its endpoint picker reads from each pod's /metrics on the pool's target port, for Triton's TensorRT-LLM
# backend (the extension's model server protocol); the HTTP port's /metrics carries them for every engine
PICKER_METRICS = {
    "queued requests": 'nv_trt_llm_request_metrics{request_type="waiting"}',
    "running requests": 'nv_trt_llm_request_metrics{request_type="scheduled"}',
    "KV-cache use": 'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}',
}


def inference_pool(opts: K8sOptions) -> dict:
    """The pods as one pool for an inference gateway (an ``HTTPRoute``'s ``backendRef`` of kind InferencePool): the
    gateway asks the endpoint picker which pod takes each OpenAI request, and sends it to that pod's HTTP port."""
    picker = {"name": opts.picker, "kind": "Service", "port": {"number": opts.endpoint_picker_port},
              "failureMode": "FailOpen" if opts.endpoint_picker_fail_open else "FailClose"}
    return {"apiVersion": INFERENCE_POOL_API, "kind": "InferencePool", "metadata": _meta(opts),
            "spec": {"selector": {"matchLabels": selector_labels(opts)},
                     "targetPorts": [{"number": PORTS["http"]}],
                     "appProtocol": "http",
                     "endpointPickerRef": picker}}


def render(cfg: ServeConfig, opts: K8sOptions) -> list[dict]:
    """Every object, in the order ``kubectl apply`` should meet them."""
    cfg = pod_config(cfg, opts)
    objs = [config_map(cfg, opts), deployment(cfg, opts), service(opts), disruption_budget(opts)]
    if opts.max_replicas:
        objs.append(autoscaler(cfg, opts))
    if opts.monitor != "none":
        objs.append(monitor(opts))
    if opts.inference_pool:
        objs.append(inference_pool(opts))
    return objs


# --- the file ----------------------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def header(cfg: ServeConfig, opts: K8sOptions, objs: list[dict]) -> str:
    kinds = ", ".join(o["kind"] for o in objs)
    lines = [(f"Rendered by `ziya-trt deploy k8s` (ziya-trt {version()}) from a ServeConfig: {cfg.engine.value} "
              f"engine, world size {cfg.world_size}, {gpus(cfg)} GPU(s) a pod."),
             f"Objects: {kinds}. Apply with: kubectl apply -f FILE",
             "The ServiceMonitor/PodMonitor needs the Prometheus Operator's CRDs."]
    if opts.max_replicas:
        lines += [f"The autoscaler reads {METRIC_FRONT_DOOR_INFLIGHT} through prometheus-adapter; add this rule to",
                  "its configuration (the Helm chart's values: rules.custom):", ""]
        lines += ["  " + ln for ln in yaml.dump(adapter_rules()["rules"], Dumper=_Dumper, sort_keys=False).splitlines()]
    if opts.inference_pool:
        lines += ["", f"The InferencePool needs the Gateway API Inference Extension's CRDs ({INFERENCE_POOL_API}) and its",
                  f"endpoint picker as the Service {opts.picker}:{opts.endpoint_picker_port}, set up for Triton's TensorRT-LLM",
                  "backend, whose metric names every pod's HTTP /metrics carries (whatever the engine):"]
        lines += [f"- {what}: {name}" for what, name in PICKER_METRICS.items()]
    return "".join(f"# {ln}".rstrip() + "\n" for ln in lines)


def to_yaml(cfg: ServeConfig, opts: K8sOptions) -> str:
    objs = render(cfg, opts)
    body = yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, allow_unicode=True, explicit_start=True, width=120)
    return header(pod_config(cfg, opts), opts, objs) + body
