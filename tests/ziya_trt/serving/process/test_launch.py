"""Launching an engine built for several GPUs: the exact mpirun command for tp2, pp2 and tp2×pp2, what rank 0
and the other ranks get, the GPU-count refusal, and the process handling (on CPU: no GPU, MPI or TensorRT-LLM
here, so no rank is ever started; the commands are checked as data, the process code with stand-in processes)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from engine_build.build import run_build
from engine_build.plan import make_plan
from tests.polling import wait_until
from ziya_trt.cli import build_parser
from ziya_trt.cli.serve import config_from_manifest, server_from_args
from ziya_trt.serving.process import procs
from ziya_trt.serving.config import ConfigError, ServeConfig, SupervisorLimits
from ziya_trt.serving.engine_link import GRPC_URL_ENV
from ziya_trt.serving.process.server import ServerStartError, TritonServer
from ziya_trt.serving.process.multi_gpu import (SHM_FLAG, MultiGpuTritonServer, count_visible_gpus, leader_mode_command,
                                                mpi_command, rank_processes, require_gpus, triton_server)
from ziya_trt.serving.http.checks import ADMIN_HEADER, RESTRICTED_APIS


@pytest.fixture
def serve_args(tmp_path, tiny_ckpt, monkeypatch):
    """``ziya-trt serve --engine tensorrt_llm`` arguments for a dry-run engine of the given tp and pp."""
    binary = tmp_path / "opt" / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    monkeypatch.setattr("ziya_trt.serving.process.server.free_port", lambda: 18000)  # tritonserver's HTTP, behind the guard

    def make(tp: int, pp: int):
        eng = tmp_path / f"eng-tp{tp}pp{pp}"
        run_build(make_plan(tiny_ckpt, "h200", "bf16", tp, pp), eng, tmp_path / f"work-tp{tp}pp{pp}", {},
                  dry_run=True, progress=lambda s: None)
        return build_parser().parse_args(["serve", "--engine", "tensorrt_llm", "--engine-dir", str(eng),
                                          "--repo-dir", str(tmp_path / "repo"), "--tritonserver", str(binary),
                                          "--admin-key", "KEY"])

    return make


def expected_command(tmp_path, world_size: int, key_marker: str) -> list[str]:
    tritonserver = str(tmp_path / "opt" / "tritonserver" / "bin" / "tritonserver")
    repo = f"--model-repository={tmp_path / 'repo'}"
    backends = f"--backend-directory={tmp_path / 'opt' / 'tritonserver' / 'backends'}"
    prefix = f"ziya{os.getpid()}p8001_"
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key_marker}"  # the key itself: see test_secret_arg
    rank0 = [tritonserver, repo, backends, "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
             "--metrics-address=127.0.0.1", "--http-port=18000", "--grpc-port=8001", "--metrics-port=8002",
             "--model-control-mode=none", f"--http-restricted-api={restricted}",
             f"--grpc-restricted-protocol={restricted}", "--exit-timeout-secs=30", "--allow-metrics=true",
             "--metrics-interval-ms=100", "--log-verbose=0", "--disable-auto-complete-config",
             f"--backend-config=python,shm-region-prefix-name={prefix}0_"]
    cmd = ["mpirun", "--allow-run-as-root", "-n", "1", *rank0]
    for rank in range(1, world_size):
        cmd += [":", "-n", "1", tritonserver, repo, backends, "--exit-timeout-secs=30", "--log-verbose=0",
                "--allow-http=false", "--allow-grpc=false", "--allow-metrics=false", "--model-control-mode=explicit",
                "--load-model=tensorrt_llm", "--disable-auto-complete-config",
                f"--backend-config=python,shm-region-prefix-name={prefix}{rank}_"]
    return cmd


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2), (2, 2)], ids=["tp2", "pp2", "tp2xpp2"])
def test_the_exact_launch_command(serve_args, tmp_path, tp, pp):
    a = serve_args(tp, pp)
    cfg = config_from_manifest(a, installed_version=lambda: None)
    assert cfg.world_size == tp * pp
    srv = server_from_args(a, cfg, gpu_probe=lambda: tp * pp)
    assert isinstance(srv, MultiGpuTritonServer) and srv.proc is None  # built, not started
    assert srv.command() == expected_command(tmp_path, tp * pp, srv.key_marker)
    assert srv.admin_key == "KEY" and not any("KEY" in arg for arg in srv.command())
    assert mpi_command(srv, tp * pp) == srv.command()  # a one-tritonserver command, as mpirun runs it, is the same


def test_rank_0_is_the_server_the_others_only_the_engine(serve_args):
    a = serve_args(2, 2)
    cmd = server_from_args(a, config_from_manifest(a, installed_version=lambda: None), gpu_probe=lambda: 4).command()
    ranks, cur = [], None
    for arg in cmd[2:]:
        if arg == ":":
            continue
        if arg == "-n":
            cur = []
            ranks.append(cur)
        cur.append(arg)
    assert len(ranks) == 4 and all(r[:2] == ["-n", "1"] for r in ranks)
    prefixes = [[x for x in r if x.startswith(SHM_FLAG)] for r in ranks]
    assert all(len(p) == 1 for p in prefixes) and len({p[0] for p in prefixes}) == 4  # a shm prefix per rank
    assert all("--disable-auto-complete-config" in r for r in ranks)
    rank0, workers = ranks[0], ranks[1:]
    assert "--model-control-mode=none" in rank0 and "--http-port=18000" in rank0 and "--grpc-port=8001" in rank0
    assert not any(x.startswith(("--load-model", "--allow-http")) for x in rank0)
    for r in workers:
        assert not any(x.startswith(("--http-", "--grpc-", "--metrics-")) for x in r)  # no port, no restriction
        assert [x for x in r if x.startswith(("--allow-", "--model-control", "--load-model"))] == [
            "--allow-http=false", "--allow-grpc=false", "--allow-metrics=false", "--model-control-mode=explicit",
            "--load-model=tensorrt_llm"]  # no front door, no Python stub: only the engine


def test_one_gpu_is_the_one_server_path_unchanged(serve_args):
    a = serve_args(1, 1)
    cfg = config_from_manifest(a, installed_version=lambda: None)
    srv = server_from_args(a, cfg, gpu_probe=lambda: 1)
    assert type(srv) is TritonServer and srv.command()[0].endswith("tritonserver")
    assert not any(x.startswith(("--load-model", "--disable-auto-complete")) for x in srv.command())


@pytest.mark.parametrize("visible,says", [(0, "no GPU is visible here"), (1, "only 1 is visible here"),
                                          (3, "only 3 are visible here")])
def test_too_few_gpus_is_a_clear_error_before_anything_is_rendered(serve_args, tmp_path, visible, says):
    a = serve_args(2, 2)
    cfg = config_from_manifest(a, installed_version=lambda: None)
    with pytest.raises(ServerStartError, match=says) as ei:
        server_from_args(a, cfg, gpu_probe=lambda: visible)
    assert "needs 4 GPUs (world size 4 = tp × pp" in str(ei.value) and not (tmp_path / "repo").exists()


def test_a_one_gpu_engine_on_a_machine_without_gpus(serve_args):
    a = serve_args(1, 1)
    with pytest.raises(ServerStartError, match="needs 1 GPU .* no GPU is visible"):
        server_from_args(a, config_from_manifest(a, installed_version=lambda: None), gpu_probe=lambda: 0)


def test_start_refuses_before_spawning(tmp_path, tiny_ckpt, monkeypatch):
    cfg = ServeConfig(engine="tensorrt_llm", tokenizer_dir=tiny_ckpt, engine_dir=tmp_path, world_size=2)
    srv = triton_server(tmp_path, cfg, gpu_probe=lambda: 1)
    with pytest.raises(ServerStartError, match="only 1 is visible"):
        srv.start()
    monkeypatch.setenv("PATH", str(tmp_path))  # no mpirun
    srv = triton_server(tmp_path, cfg, gpu_probe=lambda: 2)
    with pytest.raises(ServerStartError, match="mpirun not found"):
        srv.start()
    assert srv.proc is None


def test_only_the_tensorrt_llm_engine_runs_on_several_gpus(tmp_path, tiny_ckpt):
    cfg = ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, world_size=2)
    with pytest.raises(ConfigError, match="only the tensorrt_llm engine"):
        triton_server(tmp_path, cfg)
    with pytest.raises(ConfigError, match="world_size >= 2"):
        leader_mode_command(["tritonserver"], 1, "p_")


def test_leader_mode_environment(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setenv("TRTLLM_ORCHESTRATOR", "1")
    monkeypatch.setenv("TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES", "1")
    from ziya_trt.serving.process.server import Ports, TritonInstall

    cfg = ServeConfig(engine="tensorrt_llm", tokenizer_dir=tiny_ckpt, engine_dir=tmp_path, world_size=2)
    srv = triton_server(tmp_path, cfg, ports=Ports(1, 2, 3), install=TritonInstall(tmp_path / "t", tmp_path))
    env = srv.env()
    assert "TRTLLM_ORCHESTRATOR" not in env and "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES" not in env
    assert env[GRPC_URL_ENV] == "127.0.0.1:2"  # the front door (rank 0) calls the engine on rank 0's port


def test_library_path_keeps_the_containers_order(tmp_path, monkeypatch):
    """An NGC image's entrypoint puts the CUDA forward-compatibility libraries first in LD_LIBRARY_PATH; the
    server's environment keeps that order and adds Python's LIBDIR after it, once."""
    import sysconfig

    from ziya_trt.serving.process.server import Ports, TritonInstall

    libdir = sysconfig.get_config_var("LIBDIR")
    external = TritonServer(tmp_path, Ports(1, 2, 3), install=TritonInstall(tmp_path / "t", tmp_path))
    ngc = "/usr/local/cuda/compat/lib.real:/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
    monkeypatch.setenv("LD_LIBRARY_PATH", ngc)
    assert external.env()["LD_LIBRARY_PATH"] == f"{ngc}:{libdir}"
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/usr/local/cuda/compat/lib.real:{libdir}:/opt/x")
    assert external.env()["LD_LIBRARY_PATH"] == f"/usr/local/cuda/compat/lib.real:{libdir}:/opt/x"  # already there
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert external.env()["LD_LIBRARY_PATH"] == libdir
    # the bundled (pytriton wheel's) tritonserver: its own libraries first, then what was there
    wheel = TritonInstall(tmp_path / "t", tmp_path, (tmp_path / "libs",))
    bundled = TritonServer(tmp_path, Ports(1, 2, 3), install=wheel)
    monkeypatch.setenv("LD_LIBRARY_PATH", ngc)
    assert bundled.env()["LD_LIBRARY_PATH"] == f"{tmp_path / 'libs'}:{ngc}:{libdir}"


# --- counting GPUs ------------------------------------------------------------------------------------------
def fake_nvidia_smi(tmp_path, gpus: int):
    smi = tmp_path / "nvidia-smi"
    lines = [f"GPU {i}: NVIDIA H200 (UUID: GPU-{i:04d})" for i in range(gpus)] + ["  MIG 1g.18gb Device 0: (UUID: MIG-1)"]
    smi.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n" + "".join(f"echo '{x}'\n" for x in lines))
    smi.chmod(0o755)
    return str(smi)


def test_count_visible_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert count_visible_gpus(env={}) == 0  # no nvidia-smi at all
    assert count_visible_gpus(env={"CUDA_VISIBLE_DEVICES": "0,1"}) == 0
    with pytest.raises(ServerStartError, match="no GPU is visible"):
        require_gpus(2)
    smi = fake_nvidia_smi(tmp_path, 4)
    assert count_visible_gpus(env={}, nvidia_smi=smi) == 4  # GPU lines only, not MIG devices
    for cvd, n in (("0,1", 2), ("", 0), ("-1", 0), ("0,-1,2", 1), ("GPU-0000,GPU-0001,GPU-0002", 3),
                   ("0,1,2,3,4,5", 4)):
        assert count_visible_gpus(env={"CUDA_VISIBLE_DEVICES": cvd}, nvidia_smi=smi) == n, cvd
    assert require_gpus(4, lambda: 4) == 4


# --- the process tree (stand-in processes: no rank is ever a real tritonserver here) -----------------------
def sleeper(*argv) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(120)", *argv]



SLOW = dict(timeout_s=10.0, every_s=0.05)  # processes starting and stopping


def stand_in_server(tmp_path, tiny_ckpt) -> MultiGpuTritonServer:
    cfg = ServeConfig(engine="tensorrt_llm", tokenizer_dir=tiny_ckpt, engine_dir=tmp_path, world_size=2)
    return triton_server(tmp_path, cfg, gpu_probe=lambda: 2)


def start_stand_in(srv, shell: str) -> None:
    srv.proc = subprocess.Popen(["bash", "-c", shell], start_new_session=True)  # in mpirun's place


def cmdline(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


def test_ranks_are_found_and_sigterm_goes_to_rank_0(tmp_path, tiny_ckpt):
    srv = stand_in_server(tmp_path, tiny_ckpt)
    r0, r1 = (shlex.join(sleeper(f"{SHM_FLAG}{srv.shm_prefix}{rank}_")) for rank in (0, 1))
    start_stand_in(srv, f"{r0} & {r1} & wait")
    try:
        assert wait_until(lambda: set(srv.ranks()) == {0, 1}, **SLOW)
        ranks = srv.ranks()
        assert srv._stub_parent() == ranks[0] and rank_processes(os.getpid(), srv.shm_prefix) == ranks
        srv._terminate()
        assert wait_until(lambda: set(srv.ranks()) == {1}, **SLOW)  # rank 0 told; a worker waits for the leader
    finally:
        srv._kill()
    assert srv.proc.poll() is not None and srv.ranks() == {}


def test_kill_reaches_ranks_in_process_groups_of_their_own(tmp_path, tiny_ckpt):
    srv = stand_in_server(tmp_path, tiny_ckpt)
    marker = f"{SHM_FLAG}{srv.shm_prefix}0_"
    start_stand_in(srv, f"setsid {shlex.join(sleeper(marker))} & wait")
    assert wait_until(lambda: any(marker.encode() in cmdline(p) for p in procs.descendants(srv.proc.pid)), **SLOW)
    (child,) = procs.descendants(srv.proc.pid)
    assert os.getpgid(child) != os.getpgid(srv.proc.pid)  # out of reach of mpirun's group
    srv._kill()
    assert wait_until(lambda: not os.path.exists(f"/proc/{child}") or _zombie(child), **SLOW)


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_supervisor_hooks_of_one_server_are_unchanged(tmp_path):
    srv = TritonServer(tmp_path)
    srv.proc = subprocess.Popen(sleeper(), start_new_session=True)
    try:
        assert srv._stub_parent() == srv.proc.pid
        srv._terminate()
        assert srv.proc.wait(10) == -signal.SIGTERM
    finally:
        srv._kill()


def test_kv_reuse_and_chunked_context_are_on_unless_switched_off(serve_args, tmp_path):
    from ziya_trt.serving.repo import tensorrt_llm_config

    a = serve_args(1, 1)
    on = tensorrt_llm_config(config_from_manifest(a, installed_version=lambda: None)).parameters
    assert on["enable_kv_cache_reuse"] == "true" and on["enable_chunked_context"] == "true"
    a.kv_cache_reuse = a.chunked_context = False
    cfg = config_from_manifest(a, installed_version=lambda: None)
    off = tensorrt_llm_config(cfg).parameters
    assert off["enable_kv_cache_reuse"] == "false" and off["enable_chunked_context"] == "false"
    assert cfg.kv_block_tokens == 32  # the dry-run engine has no config.json: trtllm-build's default
    # a real engine's block size is read from its config.json, for the front door's cached-token count
    (a.engine_dir / "config.json").write_text(json.dumps({"version": "1.2.1", "build_config": {
        "plugin_config": {"tokens_per_block": 64}}}))
    assert config_from_manifest(a, installed_version=lambda: None).kv_block_tokens == 64


@pytest.mark.parametrize("ready", [True, False])  # 2.51 stays ready when a stub dies; 2.71 turns not ready
def test_a_dead_stub_of_a_live_server_is_a_restart_at_once_whatever_readiness_says(tmp_path, monkeypatch, ready):
    srv = TritonServer(tmp_path / "repo", supervise=False, supervisor_limits=SupervisorLimits(exit_timeout_s=30))
    srv.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        srv._stubs = {srv.proc.pid + 1_000_000: "ziya"}  # a stub that is gone
        monkeypatch.setattr(srv, "_live_stubs", dict)  # this server only: others run in this process
        monkeypatch.setattr(srv, "_triton_ok", lambda what: what == "live" or ready)
        t0 = time.monotonic()
        assert srv.supervisor.trouble() == "the Python backend stub of 'ziya' died"
        assert time.monotonic() - t0 < 5  # not the exit wait (exit_timeout + 10 s) of a shutdown
    finally:
        srv.proc.kill()
        srv.proc.wait()


def test_stubs_gone_while_tritonserver_is_not_live_is_its_shutdown_not_a_dead_stub(tmp_path, monkeypatch):
    srv = TritonServer(tmp_path / "repo", supervise=False, supervisor_limits=SupervisorLimits(exit_timeout_s=1))
    srv.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])  # it exits by itself
    srv._stubs = {srv.proc.pid + 1_000_000: "ziya"}
    monkeypatch.setattr(srv, "_live_stubs", dict)  # this server only: others run in this process
    monkeypatch.setattr(srv, "_triton_ok", lambda what: False)
    assert srv.supervisor.trouble() == "tritonserver exited with code 0"


def test_limits_are_the_serve_configs_or_for_a_bare_repository_the_defaults(tmp_path, tiny_ckpt):
    from ziya_trt.serving.config import HttpLimits
    from ziya_trt.serving.process.server import TritonInstall

    cfg = ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, http={"max_body_bytes": 0},
                      supervisor={"exit_timeout_s": 7, "restart_limit": 1})
    srv = TritonServer(tmp_path, serve_config=cfg, install=TritonInstall(tmp_path / "t", tmp_path))
    assert srv.exit_timeout_s == 7 and "--exit-timeout-secs=7" in srv.command()
    assert f"--http-port={srv.ports.http}" in srv.command() and srv.openai_url is None  # no guard: no OpenAI API
    bare = TritonServer(tmp_path)
    assert bare.http_limits == HttpLimits() and bare.supervisor_limits == SupervisorLimits() and bare.guarded
    with pytest.raises(ValueError, match="give them there"):
        TritonServer(tmp_path, serve_config=cfg, supervisor_limits=SupervisorLimits())
