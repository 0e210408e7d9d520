"""Rendering of config.pbtxt from the typed ServeConfig (no server)."""

from pathlib import Path

import pytest

from tests.contracts import facts
from ziya_trt.serving.config import ConfigError, ServeConfig
from ziya_trt.serving.repo import ModelConfig, render_repo, tensorrt_llm_config, to_pbtxt
from ziya_trt.wire.tensors import ENGINE_INPUTS, ENGINE_OUTPUTS, FRONT_DOOR_ENGINE_OUTPUTS, FRONT_DOOR_EXTRAS, FRONT_DOOR_INPUTS, FRONT_DOOR_OUTPUTS, FRONT_DOOR_RELAXED


def trt_cfg(**kw):
    return ServeConfig(engine="tensorrt_llm", tokenizer_dir=Path("/models/ziya"), engine_dir=Path("/engines/ziya"), **kw)


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_tensorrt_llm_config_uses_only_1_2_1_names_and_types():
    ref = facts()["triton_models"]["models"]["tensorrt_llm"]
    m = tensorrt_llm_config(trt_cfg())
    ins, outs = by_name(ref["inputs"]), by_name(ref["outputs"])
    for spec in m.inputs:
        assert spec.name in ins, spec.name
        assert spec.data_type == ins[spec.name]["data_type"] and list(spec.dims) == ins[spec.name]["dims"]
        assert spec.optional == ins[spec.name]["optional"], spec.name
    for spec in m.outputs:
        assert spec.name in outs and spec.data_type == outs[spec.name]["data_type"], spec.name
    keys = {p["key"] for p in ref["parameters"]}
    assert set(m.parameters) <= keys, set(m.parameters) - keys
    assert m.backend in ref["backend_values"] and m.parameters["gpt_model_type"] in ref["batching_strategy_values"]


def test_every_required_1_2_1_engine_input_is_declared():
    ref = facts()["triton_models"]["models"]["tensorrt_llm"]
    required = {i["name"] for i in ref["inputs"] if not i["optional"]}
    assert required <= set(ENGINE_INPUTS)


def test_front_door_names_match_tensorrt_llm_bls():
    ref = facts()["triton_models"]["models"]["tensorrt_llm_bls"]
    ins, outs = by_name(ref["inputs"]), by_name(ref["outputs"])
    for spec in FRONT_DOOR_INPUTS.values():
        if spec.name in FRONT_DOOR_EXTRAS:
            continue
        assert spec.name in ins and spec.data_type == ins[spec.name]["data_type"], spec.name
        # text_input is required there; here a request gives it or a conversation (messages)
        assert spec.optional == ins[spec.name]["optional"] or spec.name in FRONT_DOOR_RELAXED, spec.name
    assert FRONT_DOOR_RELAXED == {"text_input"} and not ins["text_input"]["optional"]
    for spec in FRONT_DOOR_OUTPUTS.values():
        assert spec.name in outs or spec.name in FRONT_DOOR_EXTRAS, spec.name
    assert FRONT_DOOR_EXTRAS.isdisjoint(outs) and FRONT_DOOR_EXTRAS.isdisjoint(ins)


def test_rendered_pbtxt_has_no_placeholders_and_all_tensors(tmp_path):
    text = to_pbtxt(tensorrt_llm_config(trt_cfg(max_batch_size=64, max_queue_size=128)))
    assert "${" not in text and 'backend: "tensorrtllm"' in text
    assert "max_batch_size: 64" in text and "max_queue_size: 128" in text and "decoupled: true" in text
    for name in list(ENGINE_INPUTS) + list(ENGINE_OUTPUTS):
        assert f'name: "{name}"' in text


def test_rendering_refuses_missing_values():
    m = ModelConfig("x", "python", 1, True, (), (), {"tokenizer_dir": ""})
    with pytest.raises(ConfigError, match="tokenizer_dir"):
        to_pbtxt(m)
    with pytest.raises(ConfigError, match=r"\$\{"):
        to_pbtxt(ModelConfig("x", "python", 1, True, (), (), {"a": "${engine_dir}"}))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(engine="reference", tokenizer_dir=Path("t")), "needs model_dir"),
        (dict(engine="tensorrt_llm", tokenizer_dir=Path("t")), "needs engine_dir"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), max_input_len=4096, max_seq_len=4096), "max_input_len"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), front_door_names=("synthetic",)), "used twice"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), send_threads=0), "send_threads"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), cancel_check_ms=0), "cancel_check_ms"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), grpc_url="localhost"), "grpc_url"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), front_door_instances=0), "front_door_instances"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), grpc_url="127.0.0.1:http"), "grpc_url"),
        (dict(engine="synthetic", tokenizer_dir=Path("t"), synthetic_schedule="lockstep"), "synthetic_schedule"),
    ],
)
def test_inconsistent_configs_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        ServeConfig(**kw)


def read_back(repo, model):
    """The ServeConfig a Python model of a rendered repository reads at start."""
    return ServeConfig.for_model({"model_repository": str(repo / model)})


def test_stock_names_repo(tmp_path):
    cfg = ServeConfig(
        engine="synthetic", tokenizer_dir=tmp_path, engine_model_name="tensorrt_llm",
        front_door_names=("ensemble", "tensorrt_llm_bls"),
    )
    repo = render_repo(cfg, tmp_path / "repo")
    assert sorted(p.name for p in repo.iterdir()) == ["ensemble", "tensorrt_llm", "tensorrt_llm_bls"]
    assert (repo / "ensemble" / "1" / "model.py").read_text().startswith('"""Triton adapter for the text front door')
    assert 'string_value: "tensorrt_llm"' in (repo / "ensemble" / "config.pbtxt").read_text()
    assert read_back(repo, "ensemble").engine_name == "tensorrt_llm"


def test_the_python_models_read_back_the_whole_config(tmp_path):
    cfg = ServeConfig(engine="reference", tokenizer_dir=tmp_path / "tok", model_dir=Path("rel/model"),
                      front_door_names=("ziya", "other"), cancel_check_ms=30, send_threads=6, grpc_url="10.0.0.5:9001")
    repo = render_repo(cfg, tmp_path / "repo")
    for model in ("ziya", "other", "reference"):
        back = read_back(repo, model)
        assert back == cfg.resolved() and back.model_dir.is_absolute()  # a model process starts elsewhere
    assert ServeConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        ServeConfig.from_json('{"engine": "synthetic", "tokenizer_dir": "t", "max_inflight": 3}')
    with pytest.raises(ConfigError, match="cannot read"):
        read_back(tmp_path, "nope")


def test_python_models_get_the_cancellation_period_and_sender_threads(tmp_path):
    from ziya_trt.serving.repo import model_configs

    cfg = ServeConfig(engine="synthetic", tokenizer_dir=Path("t"), cancel_check_ms=30, send_threads=6)
    repo = render_repo(cfg, tmp_path / "repo")
    engine, door = model_configs(cfg)
    back = read_back(repo, "synthetic")
    assert back.cancel_check_ms == 30 and back.send_threads == 6
    assert engine.instance_count == 1  # one engine: its slots are shared by every request
    back = read_back(repo, "ziya")
    assert back.cancel_check_ms == 30 and back.send_threads == 6
    # the real backend keeps its own (C++) polling period
    assert tensorrt_llm_config(trt_cfg(cancel_check_ms=30)).parameters["cancellation_check_period_ms"] == "10"


def test_front_door_gets_the_grpc_address_only_when_one_is_given(tmp_path):
    repo = render_repo(ServeConfig(engine="synthetic", tokenizer_dir=Path("t")), tmp_path / "a")
    assert read_back(repo, "ziya").grpc_url is None  # ziya-trt serve passes it through the environment
    repo = render_repo(ServeConfig(engine="synthetic", tokenizer_dir=Path("t"), grpc_url="10.0.0.5:9001"), tmp_path / "b")
    assert read_back(repo, "ziya").grpc_url == "10.0.0.5:9001"


def test_render_only_names_the_grpc_port_for_a_server_started_by_hand(tmp_path, tiny_ckpt):
    from ziya_trt.cli import main

    assert main(["serve", "--engine", "synthetic", "--tokenizer-dir", str(tiny_ckpt), "--grpc-port", "9101",
                 "--render-only", "--repo-dir", str(tmp_path / "repo")]) == 0
    assert read_back(tmp_path / "repo", "ziya").grpc_url == "127.0.0.1:9101"


def test_front_door_asks_the_engine_for_tensorrt_llm_outputs_it_fills():
    outs = by_name(facts()["triton_models"]["models"]["tensorrt_llm"]["outputs"])
    assert {"output_ids", "sequence_length"} <= set(FRONT_DOOR_ENGINE_OUTPUTS) <= set(outs)
    # the reused-blocks count is a perf metric: tensorrt_llm fills it only for return_perf_metrics
    from ziya_trt.engine.request import EngineRequest
    from ziya_trt.text.sampling import SamplingParams
    from ziya_trt.wire.arrays import engine_fields

    assert "kv_cache_reused_blocks" in FRONT_DOOR_ENGINE_OUTPUTS
    req = EngineRequest.from_params([1, 5], SamplingParams(), end_id=2, pad_id=0, return_perf_metrics=True)
    assert engine_fields(req)["return_perf_metrics"] is True


def test_the_fronts_share_one_admission_budget_of_the_engines_slots_and_queue():
    from ziya_trt.serving.repo import model_configs

    cfg = ServeConfig(engine="synthetic", tokenizer_dir=Path("t"), max_batch_size=8, max_queue_size=7,
                      front_door_instances=2)
    _, door = model_configs(cfg)
    assert door.instance_count == 2 and cfg.admission_budget == 15  # for both instances and the OpenAI API
    assert "count: 2" in to_pbtxt(door)


def test_serve_passes_the_synthetic_schedule_to_the_engine_model(tmp_path, tiny_ckpt):
    from ziya_trt.cli import main

    for schedule in ("step", "stream"):
        repo = tmp_path / schedule
        assert main(["serve", "--engine", "synthetic", "--tokenizer-dir", str(tiny_ckpt), "--synthetic-schedule",
                     schedule, "--render-only", "--repo-dir", str(repo)]) == 0
        assert read_back(repo, "synthetic").synthetic_schedule == schedule
