"""``ziya-trt deploy k8s``: Kubernetes manifests for ``ziya-trt serve``, from a ServeConfig file and options."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..deploy import k8s
from ..deploy.options import CPU_IMAGE, GPU_IMAGE, MONITORS, STARTUP_SLACK_S, K8sOptions
from ..serving.config import ConfigError, ServeConfig

EXAMPLES = """\
examples:
  ziya-trt deploy k8s --config serve_config.json --volume-claim ziya-engines -o ziya-trt.yaml
  ziya-trt deploy k8s --config cpu.json --host-path /srv/models --max-replicas 0 --replicas 2
  ziya-trt deploy k8s --config serve_config.json --volume-claim ziya-engines --inference-pool
  kubectl apply -f ziya-trt.yaml

The config's paths (engine_dir, tokenizer_dir, model_dir) are the pod's: under --mount-path, where the volume
is mounted. `ziya-trt serve --render-only` writes such a file beside each Python model's config.pbtxt.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("deploy", help="render deployment manifests (Kubernetes)")
    dsub = p.add_subparsers(dest="target", metavar="TARGET")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    k = dsub.add_parser("k8s", help="Deployment, Service, PDB, HPA, ServiceMonitor (and InferencePool) for "
                                    "`ziya-trt serve`",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_k8s_options(k)
    k.set_defaults(func=run_k8s)


def add_k8s_options(p) -> None:
    d = argparse.Namespace(**{f.name: f.default for f in fields(K8sOptions)})  # the defaults, in one place
    p.add_argument("--config", type=Path, required=True,
                   help="the ServeConfig to serve (JSON, as `ziya-trt serve --config` reads it), with the paths "
                        "the pod sees")
    p.add_argument("-o", "--output", type=Path, help="write the manifests here (default: standard output)")
    g = p.add_argument_group("workload")
    g.add_argument("--name", default=d.name, help="name of every object, and the instance label (default %(default)s)")
    g.add_argument("--namespace", help="namespace of every object (default: kubectl's)")
    g.add_argument("--image", help=f"container image (default {GPU_IMAGE} for tensorrt_llm, else {CPU_IMAGE})")
    g.add_argument("--cpu", help="CPU request (default 8 for tensorrt_llm, else 2)")
    g.add_argument("--memory", help="memory request and limit (default 64Gi for tensorrt_llm, else 8Gi)")
    g.add_argument("--shm-size", default=d.shm_size, help="/dev/shm for the python backend (default %(default)s)")
    g.add_argument("--gpu-resource", default=d.gpu_resource,
                   help="extended resource for GPUs; a pod asks for the engine's world size (default %(default)s)")
    g.add_argument("--admin-key-secret", metavar="NAME[:KEY]",
                   help="pass `serve --admin-key` from this Secret (key default admin-key); without it the server "
                        "makes a random key and saves it in the pod")
    v = p.add_argument_group("engine or model volume (exactly one)")
    v.add_argument("--volume-claim", metavar="PVC",
                   help="a PersistentVolumeClaim holding the engine/model, mounted read-only")
    v.add_argument("--host-path", metavar="DIR", help="a directory on the node instead")
    v.add_argument("--mount-path", help="where the pod sees it (default /engines for tensorrt_llm, else /models)")
    t = p.add_argument_group("timing")
    t.add_argument("--startup-timeout", type=int, default=d.startup_timeout_s,
                   help="seconds the engine may take to load: `serve --ready-timeout`, and the startup probe's "
                        f"budget with {STARTUP_SLACK_S} s more (default %(default)s)")
    t.add_argument("--exit-timeout", type=int, default=d.exit_timeout_s,
                   help="`serve --exit-timeout`: tritonserver's wait for in-flight requests (default %(default)s)")
    t.add_argument("--pre-stop", type=int, default=d.pre_stop_s,
                   help="seconds between termination and the drain, for endpoints to drop the pod "
                        "(default %(default)s)")
    s = p.add_argument_group("scaling and routing")
    s.add_argument("--replicas", type=int, default=d.replicas,
                   help="replicas, or the autoscaler's minimum (default %(default)s)")
    s.add_argument("--max-replicas", type=int, default=d.max_replicas,
                   help="the autoscaler's maximum; 0: no HorizontalPodAutoscaler (default %(default)s)")
    s.add_argument("--target-inflight", type=float,
                   help="average ziya_frontdoor_inflight_requests per pod to scale at (default: max_batch_size)")
    s.add_argument("--session-affinity", action="store_true",
                   help="Service sessionAffinity ClientIP: a client's requests stay on one pod (warm prefix cache)")
    s.add_argument("--affinity-timeout", type=int, default=d.affinity_timeout_s,
                   help="seconds a client stays on its pod (default %(default)s)")
    s.add_argument("--max-unavailable", type=int, default=d.max_unavailable,
                   help="PodDisruptionBudget: pods a voluntary disruption may take at once (default %(default)s)")
    g = p.add_argument_group("inference gateway (Gateway API Inference Extension)")
    g.add_argument("--inference-pool", action="store_true",
                   help="also an InferencePool of the pods, for an HTTPRoute's backendRef; its endpoint picker is "
                        "installed apart")
    g.add_argument("--endpoint-picker", metavar="SERVICE", help="the endpoint picker's Service (default NAME-epp)")
    g.add_argument("--endpoint-picker-port", type=int, default=d.endpoint_picker_port,
                   help="its port (default %(default)s)")
    g.add_argument("--endpoint-picker-fail-open", action="store_true",
                   help="route without the picker when it does not answer (default: fail closed)")
    m = p.add_argument_group("monitoring")
    m.add_argument("--monitor", choices=MONITORS, default=d.monitor,
                   help="Prometheus Operator object (default %(default)s)")
    m.add_argument("--monitor-label", action="append", default=[], metavar="KEY=VALUE",
                   help="extra label on it, for the Prometheus's selector (e.g. release=prometheus); repeatable")


def options_from_args(a) -> K8sOptions:
    labels = []
    for kv in a.monitor_label:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ConfigError(f"deploy options: --monitor-label {kv!r} is not KEY=VALUE")
        labels.append((key, value))
    return K8sOptions(
        name=a.name, namespace=a.namespace, image=a.image, replicas=a.replicas, max_replicas=a.max_replicas,
        target_inflight=a.target_inflight, volume_claim=a.volume_claim, host_path=a.host_path,
        mount_path=a.mount_path, startup_timeout_s=a.startup_timeout, exit_timeout_s=a.exit_timeout,
        pre_stop_s=a.pre_stop, monitor=a.monitor, monitor_labels=tuple(labels), admin_key_secret=a.admin_key_secret,
        session_affinity=a.session_affinity, affinity_timeout_s=a.affinity_timeout, cpu=a.cpu, memory=a.memory,
        shm_size=a.shm_size, gpu_resource=a.gpu_resource, max_unavailable=a.max_unavailable,
        inference_pool=a.inference_pool, endpoint_picker=a.endpoint_picker,
        endpoint_picker_port=a.endpoint_picker_port, endpoint_picker_fail_open=a.endpoint_picker_fail_open,
    )


def run_k8s(a) -> int:
    cfg = ServeConfig.read(a.config)
    text = k8s.to_yaml(cfg, options_from_args(a))
    if a.output:
        a.output.write_text(text, encoding="utf-8")
        print(f"wrote {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
