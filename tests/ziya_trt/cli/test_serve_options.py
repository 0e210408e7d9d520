"""``ziya-trt serve``'s config options are generated from ServeConfig's fields: every field is a flag (unless marked
not to be), every flag has help, the flags people and files already use still work, and a value given on the
command line reaches the config, or is refused by its flag's name."""

import argparse

import pytest

from ziya_trt.cli import build_parser, main
from ziya_trt.cli.config_options import config_options
from ziya_trt.cli.serve import config_from_args
from ziya_trt.serving.config import ConfigError, ServeConfig
from ziya_trt.serving.config_model import FrozenConfig


def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def fields(model, prefix=()):
    for name, f in model.model_fields.items():
        t = f.annotation
        if isinstance(t, type) and issubclass(t, FrozenConfig):
            yield from fields(t, prefix + (name,))
        else:
            yield prefix + (name,), f


def test_every_field_is_a_flag_unless_marked_and_every_option_has_help():
    by_path = {o.path: o for o in config_options(ServeConfig)}
    for path, f in fields(ServeConfig):
        marked = (f.json_schema_extra or {}).get("flag", "") is None
        assert (path in by_path) != marked, path
    flags = [o.flag for o in by_path.values()]
    assert len(flags) == len(set(flags))
    parser = serve_parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    text = parser.format_help()
    for flag in flags:
        assert flag in text
    assert "--no-kv-cache-reuse" in text and "--no-chunked-context" in text


def test_the_flags_in_use_still_work(tmp_path):
    a = build_parser().parse_args([
        "serve", "--engine", "reference", "--model-dir", str(tmp_path), "--tokenizer-dir", str(tmp_path / "tok"),
        "--template", "chat_template", "--dtype", "bfloat16", "--max-batch-size", "4", "--max-queue-size", "2",
        "--max-input-len", "100", "--max-seq-len", "200", "--no-kv-cache-reuse", "--no-chunked-context",
        "--synthetic-tokens-per-s", "7", "--synthetic-first-token-s", "0.5", "--synthetic-schedule", "step",
        "--exit-timeout", "12", "--ready-timeout", "33", "--http-body-limit", "0", "--restart-limit", "1",
        "--http-max-connections", "99", "--http-header-timeout", "2.5", "--http-body-budget", "1000"])
    cfg = config_from_args(a)
    assert cfg == ServeConfig(
        engine="reference", model_dir=tmp_path, tokenizer_dir=tmp_path / "tok", template="chat_template",
        dtype="bfloat16", max_batch_size=4, max_queue_size=2, max_input_len=100, max_seq_len=200,
        kv_cache_reuse=False, chunked_context=False, synthetic_tokens_per_s=7.0, synthetic_first_token_s=0.5,
        synthetic_schedule="step", drain_timeout_s=7.0,
        supervisor={"exit_timeout_s": 12, "ready_timeout_s": 33.0, "restart_limit": 1},
        http={"max_body_bytes": 0, "max_connections": 99, "header_timeout_s": 2.5, "body_budget_bytes": 1000})


def test_defaults_are_the_configs(tmp_path):
    a = build_parser().parse_args(["serve", "--engine", "synthetic", "--tokenizer-dir", str(tmp_path)])
    assert config_from_args(a) == ServeConfig(engine="synthetic", tokenizer_dir=tmp_path, drain_timeout_s=25.0)
    assert a.engine == "synthetic" and a.ready_timeout == 180 and a.kv_cache_reuse is True


def test_a_config_file_is_changed_by_the_options_given_and_only_those(tmp_path):
    base = ServeConfig(engine="synthetic", tokenizer_dir=tmp_path, max_batch_size=16, drain_timeout_s=3.0,
                       supervisor={"exit_timeout_s": 9})
    f = base.write(tmp_path / "serve_config.json")
    same = config_from_args(build_parser().parse_args(["serve", "--config", str(f)]))
    assert same == base
    changed = config_from_args(build_parser().parse_args(
        ["serve", "--config", str(f), "--ready-timeout", "900", "--max-batch-size", "8", "--no-kv-cache-reuse"]))
    assert changed == base.with_(max_batch_size=8, kv_cache_reuse=False, supervisor={"ready_timeout_s": 900.0})


@pytest.mark.parametrize("argv, message", [
    (["--max-queue-size", "-1"], "serve config: --max-queue-size: -1 must be at least 0"),
    (["--http-header-timeout", "0"], "--http-header-timeout: 0 must be more than 0 seconds"),
    (["--max-input-len", "4096", "--max-seq-len", "4096"], "need max_input_len (4096) < max_seq_len (4096)"),
    (["--cors-origin", "https://a.example/app"], "--cors-origin: ('https://a.example/app',) has 'https://a.example/app', not an origin"),
])
def test_a_bad_value_is_refused_by_its_flags_name(tmp_path, capsys, argv, message):
    assert main(["serve", "--engine", "synthetic", "--tokenizer-dir", str(tmp_path), "--render-only",
                 "--repo-dir", str(tmp_path / "repo"), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "pydantic" not in err


def test_a_bad_value_in_the_file_is_named_by_its_field(tmp_path):
    f = tmp_path / "serve_config.json"
    f.write_text('{"engine": "synthetic", "tokenizer_dir": "t", "max_queue_size": -1}')
    with pytest.raises(ConfigError, match=r"serve config: max_queue_size -1 must be at least 0"):
        config_from_args(build_parser().parse_args(["serve", "--config", str(f)]))


def test_choices_come_from_the_fields_type():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--dtype", "fp8"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--batch-scheduler-policy", "static"])


def test_a_repeatable_option_adds_each_use_and_replaces_the_files_list(tmp_path):
    a = build_parser().parse_args(["serve", "--engine", "synthetic", "--tokenizer-dir", str(tmp_path),
                                   "--cors-origin", "https://a.example", "--cors-origin", "http://localhost:3000"])
    assert config_from_args(a).http.cors_origins == ("https://a.example", "http://localhost:3000")
    f = ServeConfig(engine="synthetic", tokenizer_dir=tmp_path, http={"cors_origins": ("*",)}).write(tmp_path / "c.json")
    assert config_from_args(build_parser().parse_args(["serve", "--config", str(f)])).http.cors_origins == ("*",)
    again = build_parser().parse_args(["serve", "--config", str(f), "--cors-origin", "https://b.example"])
    assert config_from_args(again).http.cors_origins == ("https://b.example",)
