"""ServeConfig as a frozen pydantic model: every bad value a ConfigError naming the field and the reason (never
pydantic's own error, links or codes), changed copies validated again, and the JSON the Python models read."""

from pathlib import Path
from typing import get_args

import pytest

from ziya_trt.engine.synthetic import SCHEDULES
from ziya_trt.serving.config import ConfigError, EngineKind, ServeConfig
from ziya_trt.text.prompt import TEMPLATES


def syn(**kw) -> ServeConfig:
    return ServeConfig(engine="synthetic", tokenizer_dir="t", **kw)


def test_values_are_typed_and_frozen():
    cfg = ServeConfig(engine="reference", tokenizer_dir="tok", model_dir="m", front_door_names=["a", "b"])
    assert cfg.engine is EngineKind.REFERENCE and cfg.tokenizer_dir == Path("tok") and cfg.model_dir == Path("m")
    assert cfg.front_door_names == ("a", "b") and hash(cfg) == hash(cfg.with_())
    with pytest.raises(Exception):
        cfg.max_batch_size = 3


@pytest.mark.parametrize("kw, message", [
    (dict(send_threads=0, world_size=0), "serve config: world_size 0 must be at least 1; send_threads 0 must be at "
                                         "least 1"),
    (dict(synthetic_first_token_s=-0.5), "synthetic_first_token_s -0.5 must be at least 0 seconds"),
    (dict(cancel_check_ms=0), "cancel_check_ms 0 must be at least 1 ms"),
    (dict(kv_reuse_bytes=-1), "kv_reuse_bytes -1 must be at least 0 bytes"),
    (dict(dtype="fp8"), "dtype 'fp8' is not one of 'float32', 'bfloat16' or 'float16'"),
    (dict(max_batch_size="many"), "max_batch_size 'many' is not valid: Input should be a valid integer"),
    (dict(max_inflight=3, other=1), "serve config: unknown field(s) max_inflight, other"),
    (dict(grpc_url="localhost"), "grpc_url 'localhost' is not host:port"),
])
def test_a_bad_value_is_a_config_error_naming_the_field_and_the_reason(kw, message):
    with pytest.raises(ConfigError) as ei:
        syn(**kw)
    assert message in str(ei.value)
    assert "pydantic" not in str(ei.value) and "type=" not in str(ei.value)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__


def test_problems_keep_each_field_for_callers_that_name_it_their_way():
    with pytest.raises(ConfigError) as ei:
        syn(max_queue_size=-1)
    (p,) = ei.value.problems
    assert p.where == ("max_queue_size",) and p.value == -1 and p.why == "must be at least 0"
    assert p.describe() == "max_queue_size -1 must be at least 0"
    assert p.describe("--max-queue-size") == "--max-queue-size: -1 must be at least 0"


def test_consistency_problems_are_reported_together():
    with pytest.raises(ConfigError, match="the reference engine needs model_dir; need max_input_len "
                                          r"\(64\) < max_seq_len \(64\)"):
        ServeConfig(engine="reference", tokenizer_dir="t", max_input_len=64, max_seq_len=64)
    with pytest.raises(ConfigError, match=r"the synthetic engine needs a tokenizer directory \(--tokenizer-dir\)"):
        ServeConfig(engine="synthetic", tokenizer_dir="")


def test_a_changed_copy_is_validated_again():
    cfg = syn(max_batch_size=4)
    assert cfg.with_(max_batch_size=16).max_batch_size == 16 and cfg.max_batch_size == 4
    with pytest.raises(ConfigError, match="max_input_len"):
        cfg.with_(max_seq_len=cfg.max_input_len)
    with pytest.raises(ConfigError, match="unknown field"):
        cfg.with_(max_inflight=3)


def test_literal_choices_are_the_projects_own():
    fields = ServeConfig.model_fields
    assert set(get_args(fields["template"].annotation)) == set(TEMPLATES)
    assert get_args(fields["synthetic_schedule"].annotation) == SCHEDULES


def test_every_field_says_what_it_is():
    assert all(f.description for f in ServeConfig.model_fields.values())


def test_json_round_trip_and_refusals():
    cfg = syn(front_door_names=("ziya", "other"), cancel_check_ms=30)
    assert ServeConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="not valid JSON"):
        ServeConfig.from_json("{oops")
    with pytest.raises(ConfigError, match="a JSON object is needed, not list"):
        ServeConfig.from_json("[1]")
