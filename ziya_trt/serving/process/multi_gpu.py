"""Serving an engine built for several GPUs (tp × pp > 1): one tritonserver per GPU under ``mpirun``, in
TensorRT-LLM's *leader mode*, as tensorrtllm_backend's ``scripts/launch_triton_server.py --world_size N`` does.

- Rank 0 is the server clients see: our whole repository (the text front door, ``tensorrt_llm``), the HTTP,
  gRPC and metrics ports, and the HTTP guard and OpenAI API in front of it (in this process, as on one GPU).
- Every other rank loads only ``tensorrt_llm`` (``--model-control-mode=explicit --load-model=...``) and opens
  no port at all. Its backend never returns from ``TRITONBACKEND_ModelInstanceInitialize``: it works for the
  leader and exits when the leader's executor shuts down (tensorrtllm_backend's ``model_instance_state.cc``).
- Each rank's Python backend gets its own shared-memory prefix, and auto-complete is off on every rank
  (``--disable-auto-complete-config``; our configs are complete).
- ``TRTLLM_ORCHESTRATOR`` is removed from the environment: set, it would switch the backend to orchestrator
  mode, which spawns its own workers with ``MPI_Comm_spawn`` and expects an MPI world of one.

``MultiGpuTritonServer`` is a ``TritonServer`` whose process is ``mpirun``: supervision, drain, restart and
stop are the same code (the launcher's threads, as on one GPU); only the command, where the Python stubs live (under rank 0), whom SIGTERM goes to
(rank 0, which shuts the workers down), what a kill reaches (every rank) and what mpirun gets if the launcher
dies (SIGTERM: mpirun then ends its ranks) differ. Not run here: this
project's machines have no GPU, no MPI and no TensorRT-LLM; the commands are tested as data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, EngineKind
from .install import ServerStartError
from .procs import descendants, read
from .server import TritonServer

MPIRUN = "mpirun"
SHM_FLAG = "--backend-config=python,shm-region-prefix-name="
ORCHESTRATOR_ENV = ("TRTLLM_ORCHESTRATOR", "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES")
# what only rank 0 keeps: its ports and their addresses and API restrictions, metrics, the model-control mode
_RANK0_ONLY = ("--http-", "--grpc-", "--metrics-", "--allow-metrics", "--model-control-mode")
_WORKER_ONLY = ("--allow-http=false", "--allow-grpc=false", "--allow-metrics=false", "--model-control-mode=explicit")

GpuProbe = Callable[[], int]


# --- the command -------------------------------------------------------------------------------------
def rank_args(base: list[str], rank: int, shm_prefix: str, engine_model: str = "tensorrt_llm") -> list[str]:
    """Rank ``rank``'s tritonserver arguments, from the one-server command ``base`` (``TritonServer.command``)."""
    args = [a for a in base if not a.startswith(SHM_FLAG)]
    if rank:
        args = [a for a in args if not a.startswith(_RANK0_ONLY)] + [*_WORKER_ONLY, f"--load-model={engine_model}"]
    return [*args, "--disable-auto-complete-config", f"{SHM_FLAG}{shm_prefix}{rank}_"]


def leader_mode_command(base: list[str], world_size: int, shm_prefix: str,
                        engine_model: str = "tensorrt_llm") -> list[str]:
    """``mpirun -n 1 <rank 0> : -n 1 <rank 1> : ...``, one tritonserver per GPU."""
    if world_size < 2:
        raise ConfigError(f"leader mode is for world_size >= 2 (got {world_size}); one GPU runs one tritonserver")
    out = [MPIRUN, "--allow-run-as-root"]
    for rank in range(world_size):
        out += [":"] if rank else []
        out += ["-n", "1", *rank_args(base, rank, shm_prefix, engine_model)]
    return out


def mpi_command(server: TritonServer, world_size: int) -> list[str]:
    """``server``'s one-tritonserver command as ``mpirun`` runs it for ``world_size`` ranks: the command
    ``MultiGpuTritonServer`` starts (generated anywhere, run only on a GPU machine)."""
    engine = server.serve_config.engine_name if server.serve_config is not None else EngineKind.TENSORRT_LLM.value
    return leader_mode_command(TritonServer.command(server), world_size, server.shm_prefix, engine)


# --- how many GPUs ---------------------------------------------------------------------------------------
def _cuda_visible(value: str) -> int:
    """Devices CUDA_VISIBLE_DEVICES lets through: CUDA stops at the first empty or negative entry."""
    n = 0
    for item in value.split(","):
        item = item.strip()
        if not item or (item.lstrip("-").isdigit() and int(item) < 0):
            break
        n += 1
    return n


def count_visible_gpus(env: dict | None = None, nvidia_smi: str | None = None) -> int:
    """GPUs a rank can use: the ``GPU n:`` lines of ``nvidia-smi -L``, capped by CUDA_VISIBLE_DEVICES where it
    is set (nvidia-smi ignores it). No nvidia-smi at all: 0."""
    env = os.environ if env is None else env
    smi = nvidia_smi or shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    listed = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    return listed if cvd is None else min(listed, _cuda_visible(cvd))


def require_gpus(needed: int, probe: GpuProbe = count_visible_gpus) -> int:
    """The number of visible GPUs, or a ``ServerStartError`` saying why the engine cannot run on them."""
    n = probe()
    if n >= needed:
        return n
    why = (f"this TensorRT-LLM engine needs {needed} GPU{'s' if needed > 1 else ''} "
           f"(world size {needed} = tp × pp, one rank per GPU)")
    if n == 0:
        raise ServerStartError(f"{why}, but no GPU is visible here: `nvidia-smi -L` is missing or lists none, "
                               "or CUDA_VISIBLE_DEVICES hides them")
    raise ServerStartError(f"{why}, but only {n} {'is' if n == 1 else 'are'} visible here (`nvidia-smi -L`, "
                           f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}); "
                           "make more visible, or build the engine for fewer")


# --- the process tree ---------------------------------------------------------------------------------
def rank_processes(root: int, shm_prefix: str) -> dict[int, int]:
    """{rank: pid} of the tritonservers below ``root``, told apart by their own shared-memory prefix flag."""
    flags = {}
    for pid in descendants(root):
        p = read(pid)
        for a in p.argv if p is not None else ():
            if a.startswith(SHM_FLAG + shm_prefix) and a.endswith("_"):
                rank = a[len(SHM_FLAG + shm_prefix):-1]
                if rank.isdigit():
                    flags[int(rank)] = pid
    return flags


# --- the server ------------------------------------------------------------------------------------
class MultiGpuTritonServer(TritonServer):
    """``TritonServer`` for a ``world_size`` > 1 engine: ``mpirun`` with one tritonserver per GPU (leader mode).
    ``gpu_probe`` counts the visible GPUs; ``start`` refuses with a clear error when they are fewer than
    ``world_size``, or when there is no ``mpirun``."""

    # If this process dies, mpirun gets SIGTERM rather than SIGKILL: a killed mpirun would leave its ranks (its
    # children, which no signal request reaches) running; told SIGTERM, it ends every rank itself (SIGTERM, then
    # SIGKILL soon after). Each rank's Python stubs follow their tritonserver.
    death_signal = signal.SIGTERM

    def __init__(self, repo: str | Path, world_size: int, gpu_probe: GpuProbe = count_visible_gpus, **kwargs):
        super().__init__(repo, **kwargs)
        if world_size < 2:
            raise ConfigError(f"MultiGpuTritonServer is for world_size >= 2 (got {world_size}); use TritonServer")
        self.world_size, self.gpu_probe = world_size, gpu_probe
        cfg = self.serve_config
        self.engine_model = cfg.engine_name if cfg is not None else EngineKind.TENSORRT_LLM.value

    def command(self) -> list[str]:
        return leader_mode_command(super().command(), self.world_size, self.shm_prefix, self.engine_model)

    def env(self) -> dict[str, str]:
        env = super().env()
        for k in ORCHESTRATOR_ENV:
            env.pop(k, None)
        return env

    def start(self, ready_timeout_s: float | None = None) -> "MultiGpuTritonServer":
        require_gpus(self.world_size, self.gpu_probe)
        if shutil.which(MPIRUN) is None:
            raise ServerStartError(f"{MPIRUN} not found: serving a world-size-{self.world_size} engine needs MPI "
                                   "(Open MPI's mpirun, as in the Triton trtllm container)")
        super().start(ready_timeout_s)
        return self

    def ranks(self) -> dict[int, int]:
        """{rank: tritonserver pid} while mpirun runs."""
        return rank_processes(self.proc.pid, self.shm_prefix) if self.proc is not None else {}

    def _stub_parent(self) -> int:
        return self.ranks().get(0, self.proc.pid)  # the front door's stubs are rank 0's children

    def _terminate(self) -> None:
        """SIGTERM to rank 0, which unloads its models; its executor's shutdown ends the workers. (mpirun, told
        itself, would SIGTERM every rank at once and SIGKILL them soon after.)"""
        leader = self.ranks().get(0)
        if leader is None:
            super()._terminate()
            return
        try:
            os.kill(leader, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _kill(self) -> None:
        """Every rank and stub, whatever process group mpirun gave it, then mpirun's own group."""
        below = descendants(self.proc.pid) if self.proc is not None else []
        for pid in below:
            for kill in (lambda p: os.killpg(os.getpgid(p), signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
                try:
                    kill(pid)
                except (ProcessLookupError, PermissionError):
                    pass
        super()._kill()


def triton_server(repo: str | Path, serve_config=None, gpu_probe: GpuProbe = count_visible_gpus,
                  **kwargs) -> TritonServer:
    """The server for ``serve_config``: ``MultiGpuTritonServer`` for an engine built for several GPUs, else
    ``TritonServer`` exactly as before. ``kwargs`` are ``TritonServer``'s."""
    world_size = serve_config.world_size if serve_config is not None else 1
    if world_size <= 1:
        return TritonServer(repo, serve_config=serve_config, **kwargs)
    if serve_config.engine is not EngineKind.TENSORRT_LLM:
        raise ConfigError(f"world_size {world_size}: only the tensorrt_llm engine runs on several GPUs "
                          f"(the {serve_config.engine.value} engine runs in one process)")
    return MultiGpuTritonServer(repo, world_size, gpu_probe=gpu_probe, serve_config=serve_config, **kwargs)
