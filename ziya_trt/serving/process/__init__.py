"""The supervisor: code that runs in the launcher's process, on its own threads, around tritonserver.

- ``server``: one tritonserver as a child process (``TritonServer``: start, readiness, restart, stop), its
  ``command`` line and environment, the ``supervisor`` thread that restarts it, the ``shutdown`` sequence (drain,
  exit, kill), and ``endpoints`` (ports, URLs); ``multi_gpu``: one per GPU under mpirun; ``install``: which
  binary runs; ``serve_process``: ``ziya-trt serve`` in a process of its own.
- ``spawn``: children that die with the launcher; ``procs``: process facts (psutil); ``secret_arg``: the
  operator's key kept off tritonserver's command line.
"""
