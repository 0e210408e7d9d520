"""The supervisor: code that runs in the launcher's process, on its own threads, around tritonserver.

- ``server``: one tritonserver as a child process (command, environment, readiness, supervision, drain, stop);
  ``multi_gpu``: one per GPU under mpirun; ``install``: which binary runs.
- ``spawn``: children that die with the launcher; ``procs``: process facts (psutil); ``secret_arg``: the
  operator's key kept off tritonserver's command line.
"""
