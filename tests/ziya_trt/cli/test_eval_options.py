"""``ziya-trt eval``'s options: URLs to the API's base, and options that cannot run refused with a clear error before
anything is asked of a server."""

import pytest

from ziya_trt.cli import main
from ziya_trt.cli.eval import openai_base


@pytest.mark.parametrize("given, base", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"), ("http://h:8000/v1/", "http://h:8000/v1"),
    ("h:9000", "http://h:9000/v1"), ("https://h/v1", "https://h/v1"),
])
def test_openai_base(given, base):
    assert openai_base(given) == base


def test_eval_alone_prints_help(capsys):
    assert main(["eval"]) == 2
    assert "agree|bench" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["agree", "--url", "h:1", "--model-dir", "/nonexistent"], "--model-dir /nonexistent: no config.json"),
    (["bench", "--url", "h:1", "--url", "h:1/v1", "--data", "."], "the same server twice"),
    (["bench", "--url", "h:1", "--tasks", "ceval,gsm8k"], "--tasks: gsm8k"),
    (["bench", "--url", "h:1", "--data", "/nonexistent"], "--data /nonexistent: not a folder"),
    (["bench", "--url", "h:1", "--limit", "0"], "--limit: must be at least 1"),
])
def test_options_that_cannot_run_are_clear_errors(argv, words, capsys, tmp_path):
    assert main(["eval", *argv, "--out", str(tmp_path / "run")]) == 1
    assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before a run folder is made
