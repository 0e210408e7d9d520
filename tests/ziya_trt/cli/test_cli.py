import json
import subprocess
import sys

from ziya_trt.cli import SUBCOMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys):
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


def test_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "ziya_trt.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "prompt" in out.stdout


def test_prompt_subcommand(tiny_ckpt, capsys):
    msgs = json.dumps([{"role": "user", "content": "你好"}], ensure_ascii=False)
    assert main(["prompt", msgs, "--tokenizer", str(tiny_ckpt)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == "<human>:你好\n<bot>:"
    assert out["n_tokens"] == len(out["input_ids"])


def test_prompt_too_long_is_a_clean_error(tiny_ckpt, capsys):
    msgs = json.dumps([{"role": "user", "content": "hello " * 50}])
    assert main(["prompt", msgs, "--tokenizer", str(tiny_ckpt), "--budget", "10"]) == 1
    err = capsys.readouterr().err
    assert "over the limit of 10 tokens" in err and "Traceback" not in err


def test_command_line_mistakes_are_clean_errors(tmp_path, capsys):
    assert main(["serve", "--engine", "synthetic", "--render-only", "--repo-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "needs a tokenizer directory (--tokenizer-dir)" in err and "Traceback" not in err
    (tmp_path / "a").mkdir()
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "results.json does not exist" in capsys.readouterr().err
    assert main(["bench", "compare", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")]) == 2
    (tmp_path / "bad.json").write_text("{oops")
    assert main(["bench", "compare", str(tmp_path / "bad.json"), str(tmp_path / "bad.json")]) == 2
    assert "is not a results.json" in capsys.readouterr().err
    from ziya_trt.serving.process.endpoints import free_port

    assert main(["bench", "--url", f"grpc://127.0.0.1:{free_port()}", "--no-plots"]) == 2
    assert "no server ready at" in capsys.readouterr().err


class _StartRecorder:
    """What `serve` starts: records the wait it is given, then reports itself down so `serve` returns."""

    def __init__(self, repo):
        self.repo, self.log_file, self.waits = repo, repo.parent / "tritonserver.log", []
        self.key_file = repo / "admin_key"
        self.http_url = self.grpc_url = "127.0.0.1:1"
        self.metrics_url, self.openai_url, self.alive, self.drained = "http://127.0.0.1:2/metrics", None, False, True

    def start(self, ready_timeout_s):
        self.waits.append(ready_timeout_s)

    def log_tail(self):
        return ""

    def stop(self):
        return 0


def test_serve_waits_for_readiness_as_long_as_told(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from ziya_trt.cli import serve
    from ziya_trt.serving.limits import READY_TIMEOUT_S

    srv = _StartRecorder(tmp_path / "repo")
    monkeypatch.setattr(serve, "server_from_args", lambda a, cfg: srv)
    argv = ["serve", "--engine", "synthetic", "--tokenizer-dir", str(tiny_ckpt), "--admin-key", "k"]
    assert build_parser().parse_args(argv).ready_timeout == READY_TIMEOUT_S == 180
    main(argv)
    main(argv + ["--ready-timeout", "1800"])
    assert srv.waits == [180, 1800] and "ready within 1800 s" in capsys.readouterr().out
    assert main(argv + ["--ready-timeout", "0"]) == 1
    assert "--ready-timeout: 0 must be more than 0 seconds" in capsys.readouterr().err and len(srv.waits) == 2


def test_a_serve_process_waits_as_long_as_its_caller(tmp_path, monkeypatch):
    """ServeProcess passes its own wait on: the `serve` it starts does not give up first."""
    from ziya_trt.serving.process import serve_process as launcher
    from ziya_trt.serving.config import ServeConfig

    started = []

    class Exited:
        returncode = 1

        def __init__(self, cmd, **kw):
            started.append(cmd)

        def poll(self):
            return 1

    monkeypatch.setattr(launcher.subprocess, "Popen", Exited)
    sp = launcher.ServeProcess(ServeConfig(engine="synthetic", tokenizer_dir=str(tmp_path)), tmp_path / "run")
    try:
        sp.start(ready_timeout_s=900)
    except launcher.ServerStartError:
        pass
    (cmd,) = started
    assert cmd[1:3] == ["-m", "ziya_trt.cli"] and build_parser().parse_args(cmd[3:]).ready_timeout == 900


def test_serve_takes_the_admin_key_from_a_file_and_prints_where_the_server_keeps_it(tiny_ckpt, tmp_path, monkeypatch,
                                                                                    capsys):
    """``--admin-key`` shows the key in serve's own arguments (``ps``); ``--admin-key-file`` does not."""
    import pytest

    from ziya_trt.cli import serve
    from ziya_trt.serving.config import ConfigError

    key = tmp_path / "key"
    key.write_text("from-a-file\n")
    a = build_parser().parse_args(["serve", "--engine", "synthetic", "--admin-key-file", str(key)])
    assert serve.admin_key(a) == "from-a-file"
    a.admin_key = "k"
    with pytest.raises(ConfigError, match="give one"):
        serve.admin_key(a)
    key.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        serve.admin_key(build_parser().parse_args(["serve", "--admin-key-file", str(key)]))
    srv = _StartRecorder(tmp_path / "repo")
    monkeypatch.setattr(serve, "server_from_args", lambda a, cfg: srv)
    main(["serve", "--engine", "synthetic", "--tokenizer-dir", str(tiny_ckpt)])
    assert f"operator key (header ziya-admin-key; over gRPC triton-grpc-protocol-ziya-admin-key): {srv.key_file}" \
        in capsys.readouterr().out


def test_the_api_key_from_a_flag_a_file_or_the_environment(tmp_path, monkeypatch):
    import argparse

    import pytest

    from ziya_trt.cli import serve
    from ziya_trt.serving.config import ConfigError

    f = tmp_path / "key"
    f.write_text("from-a-file\n")
    a = argparse.Namespace(api_key=None, api_key_file=None)
    monkeypatch.delenv(serve.API_KEY_ENV, raising=False)
    assert serve.api_key(a) is None
    monkeypatch.setenv(serve.API_KEY_ENV, "from-env")
    assert serve.api_key(a) == "from-env"
    assert serve.api_key(argparse.Namespace(api_key="given", api_key_file=None)) == "given"
    assert serve.api_key(argparse.Namespace(api_key=None, api_key_file=f)) == "from-a-file"
    with pytest.raises(ConfigError):
        serve.api_key(argparse.Namespace(api_key="given", api_key_file=f))
