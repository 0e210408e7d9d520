"""``ziya-trt serve``: render the model repository, start tritonserver, wait, stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from ..serving.config import ConfigError, EngineKind, ServeConfig
from ..serving.process.install import external_triton
from ..serving.process.server import Ports, TritonServer
from ..serving.process.multi_gpu import GpuProbe, count_visible_gpus, require_gpus, triton_server
from ..serving.repo import check_tokenizer_info, render_repo
from .config_options import add_config_options, config_values, named_by_flags

STOCK_NAMES = {"front_door_names": ("ensemble", "tensorrt_llm_bls"), "engine_model_name": "tensorrt_llm"}


API_KEY_ENV = "ZIYA_TRT_API_KEY"


def add_serve_options(p) -> None:
    """The config's options (one per ``ServeConfig`` field: ``config_options.py``), then where and how to run."""
    p.add_argument("--config", type=Path, help="a ServeConfig as JSON (serve_config.json) to serve; the config "
                                               "options given on the command line change it")
    add_config_options(p, ServeConfig)
    p.add_argument("--stock-names", action="store_true",
                   help="name models like tensorrtllm_backend: ensemble + tensorrt_llm_bls front doors, tensorrt_llm engine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--http-port", type=int, default=8000, help="public HTTP port (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default %(default)s)")
    p.add_argument("--free-ports", action="store_true", help="pick free ports instead")
    p.add_argument("--tritonserver", help="use this tritonserver binary instead of the bundled one")
    p.add_argument("--repo-dir", type=Path, default=Path("runs/model_repo"), help="where to render the repository")
    p.add_argument("--log-file", type=Path, help="server log (default: beside the repository)")
    p.add_argument("--admin-key", help="the operator's key for the control, memory, statistics and model-config "
                                       "APIs (header ziya-admin-key; default: a random one, saved in the repository "
                                       "as admin_key). Any local user sees it in this command's arguments: prefer "
                                       "--admin-key-file")
    p.add_argument("--admin-key-file", type=Path, help="read the operator's key from this file (its first line)")
    p.add_argument("--api-key", help="a key every OpenAI API request must carry (Authorization: Bearer KEY), as "
                                     "vLLM's and trtllm-serve's --api-key (default: $ZIYA_TRT_API_KEY, else none). "
                                     "Any local user sees it in this command's arguments: prefer --api-key-file")
    p.add_argument("--api-key-file", type=Path, help="read the OpenAI API's key from this file (its first line)")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="render the model repository and run tritonserver")
    add_serve_options(p)
    p.add_argument("--render-only", action="store_true", help="render the repository and exit")
    p.set_defaults(func=run)


def config_from_args(a) -> ServeConfig:
    """The config to serve: ``--config``'s, changed by the config options given; else the options' own (with the
    engine's build manifest for tensorrt_llm)."""
    if a.config:
        cfg = ServeConfig.read(a.config)
        if cfg.engine is EngineKind.TENSORRT_LLM and (Path(cfg.engine_dir) / "ziya_manifest.json").exists():
            checked_manifest(cfg.engine_dir)
        return _from_flags(config_values(a, ServeConfig, given_only=True), base=cfg)
    if a.engine == EngineKind.TENSORRT_LLM.value:
        return config_from_manifest(a)
    return _from_flags(config_values(a, ServeConfig), _derived(a, a.tokenizer_dir or a.model_dir or a.engine_dir))


def _derived(a, tokenizer_dir) -> dict:
    """The fields no option sets: the tokenizer's default, the stock names', and the drain's timeout (what
    ``--exit-timeout`` leaves of tritonserver's own wait, less 5 s, at least 1 s)."""
    return {"tokenizer_dir": tokenizer_dir, "drain_timeout_s": max(1.0, a.exit_timeout - 5.0),
            **(STOCK_NAMES if a.stock_names else {})}


def _from_flags(values: dict, fixed: dict | None = None, base: ServeConfig | None = None) -> ServeConfig:
    """The config of ``values`` (the options'; a bad one is named by its flag) and ``fixed`` (from elsewhere)."""
    fields = values | (fixed or {})
    try:
        return base.with_(**fields) if base is not None else ServeConfig(**fields)
    except ConfigError as e:
        raise named_by_flags(e, ServeConfig, {k: v for k, v in values.items() if k not in (fixed or {})}) from None


def checked_manifest(engine_dir: Path, installed_version=None) -> dict:
    """The engine's build manifest, refused where the engine's config.json or the installed TensorRT-LLM
    (``installed_version()``; default: the one installed here, if any, read without importing it) differs from its version."""
    from engine_build.build import check_serving_versions, read_manifest, trtllm_version

    m = read_manifest(engine_dir)
    check_serving_versions(engine_dir, m, (installed_version or trtllm_version)())
    return m


def config_from_manifest(a, installed_version=None) -> ServeConfig:
    """The tensorrt_llm model's limits, world size and tokenizer come from the (version-checked) manifest, and its
    KV block size from the engine; the other options from the command line."""
    if not a.engine_dir:
        raise ConfigError("--engine tensorrt_llm needs --engine-dir (a directory built by `ziya-trt build`)")
    m = checked_manifest(a.engine_dir, installed_version)
    plan = m["plan"]
    built = {
        "engine": EngineKind.TENSORRT_LLM,
        "engine_dir": a.engine_dir.resolve(),
        "engine_model_name": "tensorrt_llm",
        "max_batch_size": plan["max_batch_size"],
        "max_input_len": plan["max_input_len"],
        "max_seq_len": plan["max_seq_len"],
        "kv_cache_free_gpu_mem_fraction": plan["kv_cache_free_gpu_mem_fraction"],
        "world_size": m["world_size"],
        "kv_block_tokens": engine_tokens_per_block(a.engine_dir),
    }
    return _from_flags(config_values(a, ServeConfig), _derived(a, a.tokenizer_dir or Path(m["tokenizer_dir"])) | built)


def engine_tokens_per_block(engine_dir: Path, default: int = 32) -> int:
    """The engine's KV block size (its config.json ``build_config.plugin_config.tokens_per_block``; trtllm-build's
    default 32 where absent), so the front door counts reused prompt tokens in the engine's blocks."""
    try:
        cfg = json.loads((Path(engine_dir) / "config.json").read_text())
        return int(cfg["build_config"]["plugin_config"]["tokens_per_block"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def server_from_args(a, cfg: ServeConfig, gpu_probe: GpuProbe = count_visible_gpus) -> TritonServer:
    """The server to start: one tritonserver, or one per GPU under mpirun for an engine built for several.
    A TensorRT-LLM engine needs ``cfg.world_size`` visible GPUs (counted by ``gpu_probe``), checked first."""
    if cfg.engine is EngineKind.TENSORRT_LLM:
        require_gpus(cfg.world_size, gpu_probe)
        check_tokenizer_info(cfg)  # guided decoding: the engine directory's xgrammar tokenizer info
    repo = render_repo(cfg, a.repo_dir)
    ports = Ports.free() if a.free_ports else Ports(a.http_port, a.grpc_port, a.metrics_port)
    install = external_triton(a.tritonserver) if a.tritonserver else None
    return triton_server(repo, cfg, gpu_probe, ports=ports, host=a.host, install=install, log_file=a.log_file,
                         admin_key=admin_key(a), api_key=api_key(a))


def admin_key(a) -> str | None:
    """The operator's key from ``--admin-key`` or ``--admin-key-file``; None: a random one."""
    return _key(a.admin_key, a.admin_key_file, "--admin-key")


def api_key(a) -> str | None:
    """The OpenAI API's key from ``--api-key``, ``--api-key-file`` or ``$ZIYA_TRT_API_KEY``; None: no key."""
    return _key(a.api_key, a.api_key_file, "--api-key") or os.environ.get(API_KEY_ENV) or None


def _key(given: str | None, path: Path | None, flag: str) -> str | None:
    if path is None:
        return given
    if given:
        raise ConfigError(f"{flag} and {flag}-file: give one")
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"{flag}-file: cannot read {path}: {e.strerror}") from e
    if not lines or not lines[0].strip():
        raise ConfigError(f"{flag}-file: {path} is empty")
    return lines[0].strip()


def run(a) -> int:
    cfg = config_from_args(a)
    if a.render_only:  # for a tritonserver started by hand: the front door needs its gRPC address
        print(render_repo(cfg.with_(grpc_url=cfg.grpc_url or f"127.0.0.1:{a.grpc_port}"), a.repo_dir))
        return 0
    srv = server_from_args(a, cfg)
    wait = cfg.supervisor.ready_timeout_s
    print(f"starting tritonserver ({cfg.engine.value} engine; ready within {wait:g} s) ... log: {srv.log_file}",
          flush=True)
    srv.start(wait)
    print(f"ready: HTTP http://{srv.http_url}  gRPC {srv.grpc_url}  metrics {srv.metrics_url}", flush=True)
    if srv.openai_url:
        print(f"OpenAI-compatible API: {srv.openai_url} (model {cfg.front_door_names[0]!r}"
              f"{'; API key required' if srv.api_key else ''})", flush=True)
    print(f"operator key (header ziya-admin-key; over gRPC triton-grpc-protocol-ziya-admin-key): {srv.key_file}",
          flush=True)
    print(f"models: {', '.join(cfg.front_door_names)} (text) -> {cfg.engine_name} (tokens). Ctrl-C stops.", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        if not srv.alive:
            print(f"tritonserver is down and was not brought back; last log lines:\n{srv.log_tail()}", file=sys.stderr)
            srv.stop()
            return 1
    print(f"stopping: draining in-flight requests (up to {srv.drain_timeout_s:.0f} s) ...", flush=True)
    rc = srv.stop()
    if rc != 0 and srv.drained:
        print(f"tritonserver ended with code {rc} after every request was drained", flush=True)
    print(f"stopped ({'drained' if srv.drained else 'some requests ended with shutting_down'})", flush=True)
    return 0 if srv.drained or rc == 0 else 1
