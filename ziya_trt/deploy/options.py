"""``K8sOptions``: everything about a Kubernetes deployment of ``ziya-trt serve`` that its ``ServeConfig`` does not
say, validated once. The times the pod spec needs (grace period, probe budgets) are derived here, from the
launcher's own stop and restart sequence, so no manifest carries a number that disagrees with the server."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..serving.config import ConfigError, EngineKind, ServeConfig
from ..serving.process.shutdown import DRAIN_AFTER_DEADLINE_S  # the launcher's drain waits this long past its deadline

GPU_IMAGE = "ziya-trt:gpu"  # deploy/docker/Dockerfile
CPU_IMAGE = "ziya-trt:cpu"  # deploy/docker/Dockerfile.cpu
TRITONSERVER = "/opt/tritonserver/bin/tritonserver"  # the NGC image's binary (the CPU image uses the bundled one)
# the startup probe allows the pod this much more than `serve --ready-timeout` (the launcher's own wait for the
# engine): the time before the launcher starts waiting (Python start-up, rendering the repository) and a probe
# period, so the launcher gives up first, saying why in the log, rather than the kubelet killing it unheard
STARTUP_SLACK_S = 30
# stop, after the drain: tritonserver gets --exit-timeout + 10 s (``TritonServer.stop``); the supervisor's join
# (5 s) and the final kill's wait (10 s) come on top; then a margin
TRITON_EXIT_EXTRA_S = 10.0
STOP_OVERHEAD_S = 15.0
GRACE_MARGIN_S = 10.0
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_1123 = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
MONITORS = ("servicemonitor", "podmonitor", "none")


@dataclass(frozen=True)
class K8sOptions:
    name: str = "ziya-trt"
    namespace: str | None = None
    image: str | None = None  # default: GPU_IMAGE for tensorrt_llm, else CPU_IMAGE
    replicas: int = 1  # the Deployment's, or the autoscaler's minimum
    max_replicas: int = 4  # 0: no HorizontalPodAutoscaler
    # average ziya_frontdoor_inflight_requests per pod the autoscaler keeps; None: the engine's slots
    # (ServeConfig.max_batch_size), i.e. add a pod once the running ones have no free slot on average
    target_inflight: float | None = None
    # the volume holding engine, checkpoint and tokenizer: exactly one of a claim or a node's directory
    volume_claim: str | None = None
    host_path: str | None = None
    mount_path: str | None = None  # default: /engines for tensorrt_llm, else /models
    # engine load: `serve --ready-timeout`, and the startup probe's budget (plus STARTUP_SLACK_S) before a restart
    startup_timeout_s: int = 1800
    exit_timeout_s: int = 30  # `ziya-trt serve --exit-timeout`: tritonserver's own wait for in-flight requests
    pre_stop_s: int = 5  # endpoints and proxies drop the pod before it starts refusing requests
    monitor: str = "servicemonitor"
    monitor_labels: tuple[tuple[str, str], ...] = ()  # e.g. (("release", "prometheus"),) for kube-prometheus-stack
    admin_key_secret: str | None = None  # "NAME" or "NAME:KEY" (key default admin-key)
    session_affinity: bool = False  # Service sessionAffinity ClientIP
    affinity_timeout_s: int = 10800
    cpu: str | None = None  # requests; default 8 (tensorrt_llm) or 2
    memory: str | None = None  # requests = limits; default 64Gi (tensorrt_llm) or 8Gi
    shm_size: str = "1Gi"  # /dev/shm for the python backend (memory-backed, counts against the memory limit)
    gpu_resource: str = "nvidia.com/gpu"
    max_unavailable: int = 1  # the PodDisruptionBudget's
    # Gateway API Inference Extension: an InferencePool of these pods for an inference gateway, whose endpoint
    # picker (installed apart, the upstream chart with the Triton TensorRT-LLM metric names) is this Service
    inference_pool: bool = False
    endpoint_picker: str | None = None  # its Service's name; default: <name>-epp
    endpoint_picker_port: int = 9002  # its gRPC ext-proc port, the upstream default
    endpoint_picker_fail_open: bool = False  # the gateway routes without it when it does not answer

    def __post_init__(self) -> None:
        problems = []
        if not _DNS_1035.match(self.name):
            problems.append(f"name {self.name!r} is not a DNS-1035 label (a-z, 0-9, '-', at most 63, starting "
                            "with a letter)")
        if self.namespace is not None and not _DNS_1035.match(self.namespace):
            problems.append(f"namespace {self.namespace!r} is not a DNS label")
        if (self.volume_claim is None) == (self.host_path is None):
            problems.append("give exactly one volume for the engine or model: a claim (--volume-claim) or a "
                            "node directory (--host-path)")
        if self.volume_claim is not None and not _DNS_1123.match(self.volume_claim):
            problems.append(f"volume claim {self.volume_claim!r} is not a valid name")
        for what, p in (("host path", self.host_path), ("mount path", self.mount_path)):
            if p is not None and not PurePosixPath(p).is_absolute():
                problems.append(f"{what} {p!r} must be absolute")
        if self.replicas < 1 or self.max_replicas < 0:
            problems.append("replicas must be >= 1 and max_replicas >= 0")
        if self.max_replicas and self.max_replicas < self.replicas:
            problems.append(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        if self.target_inflight is not None and not self.target_inflight > 0:
            problems.append("target_inflight must be > 0")
        if self.startup_timeout_s < 10 or self.exit_timeout_s < 1 or self.pre_stop_s < 0:
            problems.append("need startup_timeout_s >= 10, exit_timeout_s >= 1 and pre_stop_s >= 0")
        if not 1 <= self.endpoint_picker_port <= 65535:
            problems.append(f"endpoint picker port {self.endpoint_picker_port} is not in 1..65535")
        if self.monitor not in MONITORS:
            problems.append(f"monitor {self.monitor!r} is not one of {', '.join(MONITORS)}")
        for k, v in self.monitor_labels:
            if not (_LABEL_KEY.match(k) and _LABEL_VALUE.match(v)):
                problems.append(f"monitor label {k}={v} is not a valid label")
        name, _, key = (self.admin_key_secret or "").partition(":")
        if self.admin_key_secret is not None and not (_DNS_1123.match(name) and re.match(r"^[-._A-Za-z0-9]*$", key)):
            problems.append(f"admin key secret {self.admin_key_secret!r} is not NAME or NAME:KEY")
        for what, q in (("cpu", self.cpu), ("memory", self.memory), ("shm size", self.shm_size)):
            if q is not None and not _QUANTITY.match(q):
                problems.append(f"{what} {q!r} is not a Kubernetes quantity")
        if self.affinity_timeout_s < 1 or self.max_unavailable < 0:
            problems.append("affinity_timeout_s must be >= 1 and max_unavailable >= 0")
        if problems:
            raise ConfigError("deploy options: " + "; ".join(problems))

    # --- what follows from the options and the served config ----------------------------------------
    @property
    def picker(self) -> str:
        return self.endpoint_picker or f"{self.name}-epp"

    def image_for(self, cfg: ServeConfig) -> str:
        return self.image or (GPU_IMAGE if cfg.engine is EngineKind.TENSORRT_LLM else CPU_IMAGE)

    def mount_for(self, cfg: ServeConfig) -> str:
        return self.mount_path or ("/engines" if cfg.engine is EngineKind.TENSORRT_LLM else "/models")

    def cpu_for(self, cfg: ServeConfig) -> str:
        return self.cpu or ("8" if cfg.engine is EngineKind.TENSORRT_LLM else "2")

    def memory_for(self, cfg: ServeConfig) -> str:
        return self.memory or ("64Gi" if cfg.engine is EngineKind.TENSORRT_LLM else "8Gi")

    def target_for(self, cfg: ServeConfig) -> float:
        return self.target_inflight if self.target_inflight is not None else float(cfg.max_batch_size)

    def admin_secret(self) -> tuple[str, str] | None:
        if self.admin_key_secret is None:
            return None
        name, _, key = self.admin_key_secret.partition(":")
        return name, key or "admin-key"


def gpus(cfg: ServeConfig) -> int:
    """GPUs a pod needs: the engine's world size (tp x pp) for TensorRT-LLM; none for the CPU engines."""
    return cfg.world_size if cfg.engine is EngineKind.TENSORRT_LLM else 0  # ServeConfig: world_size >= 1


def termination_grace_s(cfg: ServeConfig, opts: K8sOptions) -> int:
    """SIGTERM to exit, as the launcher spends it: the preStop pause, the drain (its timeout, then the models end
    what is left), tritonserver's exit (--exit-timeout + 10 s), the supervisor's join and the final kill, and a
    margin. Kubernetes counts the preStop hook inside the grace period."""
    return math.ceil(opts.pre_stop_s + cfg.drain_timeout_s + DRAIN_AFTER_DEADLINE_S + opts.exit_timeout_s
                     + TRITON_EXIT_EXTRA_S + STOP_OVERHEAD_S + GRACE_MARGIN_S)


def check_paths(cfg: ServeConfig, mount: str) -> None:
    """Every directory the config names must be on the mounted volume, as the pod sees it."""
    problems = []
    for field in ("engine_dir", "model_dir", "tokenizer_dir"):
        p = getattr(cfg, field)
        if p is None:
            continue
        pp = PurePosixPath(str(p))
        if not pp.is_absolute() or not pp.is_relative_to(mount):
            problems.append(f"{field} {str(p)!r} is not under the volume's mount {mount}")
    if problems:
        raise ConfigError("serve config: " + "; ".join(problems) + " (write the paths the pod sees into the config, "
                          "or pass --mount-path)")
