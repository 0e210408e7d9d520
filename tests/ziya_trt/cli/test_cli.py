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
    from ziya_trt.serving.launcher import free_port

    assert main(["bench", "--url", f"grpc://127.0.0.1:{free_port()}", "--no-plots"]) == 2
    assert "no server ready at" in capsys.readouterr().err
