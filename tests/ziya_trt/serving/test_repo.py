"""Rendering of config.pbtxt from the typed ServeConfig (no server)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.contracts import ROOT, facts
from ziya_trt.serving.config import ConfigError, ServeConfig
from ziya_trt.serving.repo import ModelConfig, render_repo, tensorrt_llm_config, to_pbtxt
from ziya_trt.wire.tensors import ENGINE_INPUTS, FRONT_DOOR_ENGINE_OUTPUTS, FRONT_DOOR_EXTRAS, FRONT_DOOR_INPUTS, FRONT_DOOR_OUTPUTS, FRONT_DOOR_RELAXED


def trt_cfg(**kw):
    return ServeConfig(engine="tensorrt_llm", tokenizer_dir=Path("/models/ziya"), engine_dir=Path("/engines/ziya"), **kw)


def by_name(rows):
    return {r["name"]: r for r in rows}


def parsed(m):
    """The rendered config as Triton parses it (its own protobuf: a placeholder left where a type or a number
    belongs fails here as it fails at load)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(to_pbtxt(m), model_config_pb2.ModelConfig())


def test_tensorrt_llm_is_the_whole_1_2_1_template_field_by_field():
    ref = facts()["triton_models"]["models"]["tensorrt_llm"]
    fix = json.loads((ROOT / "contracts" / "template-corrections.json").read_text())["tensorrt_llm"]
    cfg = trt_cfg(max_batch_size=64, max_queue_size=128)
    pb = parsed(tensorrt_llm_config(cfg))
    assert pb.backend == "tensorrtllm" and pb.max_batch_size == 64 and pb.model_transaction_policy.decoupled
    db = pb.dynamic_batching
    assert list(db.preferred_batch_size) == [64] and db.default_queue_policy.max_queue_size == 128
    assert db.max_queue_delay_microseconds == 0
    assert [g.kind for g in pb.instance_group] == [model_config_pb2_kind(ref["instance_group"]["kind"])]
    types = {"${encoder_input_features_data_type}": "TYPE_FP16", "${prompt_embedding_table_data_type}": "TYPE_FP16",
             "${logits_datatype}": "TYPE_FP32"}
    for rows, got in ((ref["inputs"], pb.input), (ref["outputs"], pb.output)):
        assert [r["name"] for r in rows] == [t.name for t in got]  # every tensor, in the template's order
        for r, t in zip(rows, got):
            assert data_type_name(t.data_type) == types.get(r["data_type"], r["data_type"]), r["name"]
            assert list(t.dims) == r["dims"], r["name"]
            if rows is ref["inputs"]:
                assert t.optional == r["optional"], r["name"]
                assert t.allow_ragged_batch == (r.get("allow_ragged_batch", False)
                                                or r["name"] in fix["allow_ragged_batch"]), r["name"]
            assert t.HasField("reshape") == ("reshape" in r), r["name"]
            if "reshape" in r:
                assert list(t.reshape.shape) == r["reshape"], r["name"]
    keys = [p["key"] for p in ref["parameters"]]
    added = {a["key"] for a in fix["parameters_added"]}
    assert set(pb.parameters) == set(keys) | added  # every key, none dropped (a map: no order)
    set_here = {"max_beam_width": "1", "gpt_model_type": "inflight_fused_batching", "gpt_model_path": "/engines/ziya",
                "tokenizer_dir": "/models/ziya", "exclude_input_in_output": "true", "enable_kv_cache_reuse": "true",
                "enable_chunked_context": "true", "batch_scheduler_policy": "guaranteed_no_evict",
                "kv_cache_free_gpu_mem_fraction": "0.9", "cancellation_check_period_ms": "10",
                "stats_check_period_ms": "100", "normalize_log_probs": "false",
                # structured outputs: the engine directory's tokenizer info (contracts/guided-decoding.json)
                "guided_decoding_backend": "xgrammar",
                "xgrammar_tokenizer_info_path": "/engines/ziya/xgrammar_tokenizer_info.json"}
    for p in ref["parameters"] + fix["parameters_added"]:
        value = pb.parameters[p["key"]].string_value
        if p["key"] in set_here:
            assert value == set_here[p["key"]], p["key"]
        else:  # unset: exactly what fill_template.py leaves, or the template's literal
            assert value == p["placeholder"].removeprefix("literal:"), p["key"]
    # guided decoding turned off stays off the way the backend reads "off": its keys present, still their placeholders
    off = parsed(tensorrt_llm_config(trt_cfg(guided_decoding=False)))
    for key in facts()["backend_behaviour"]["parameters_must_exist"]["unguarded_reads"]:
        assert key in pb.parameters and key in off.parameters
    assert off.parameters["guided_decoding_backend"].string_value == "${guided_decoding_backend}"
    assert off.parameters["xgrammar_tokenizer_info_path"].string_value == "${xgrammar_tokenizer_info_path}"


def model_config_pb2_kind(name):
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelInstanceGroup.Kind.Value(name)


def data_type_name(value):
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


def test_the_log_prob_tensors_and_their_setting_are_rendered_as_the_contracts_say():
    """return_log_probs in, output_log_probs and cum_log_probs out, as the template declares them; normalize_log_probs
    false, so greedy tokens get their log probability rather than 0 (contracts/log-probs.json)."""
    ref = facts()["triton_models"]["models"]["tensorrt_llm"]
    lp = json.loads((ROOT / "contracts" / "log-probs.json").read_text())
    assert "false" in lp["distribution"]["normalize_log_probs"]
    pb = parsed(tensorrt_llm_config(trt_cfg()))
    ins, outs = by_name(ref["inputs"]), by_name(ref["outputs"])
    got_in, got_out = {t.name: t for t in pb.input}, {t.name: t for t in pb.output}
    r, t = ins["return_log_probs"], got_in["return_log_probs"]
    assert (data_type_name(t.data_type), list(t.dims), t.optional) == (r["data_type"], r["dims"], r["optional"])
    assert r["data_type"] == "TYPE_BOOL" and t.optional and list(t.reshape.shape) == []
    for name, dims in (("output_log_probs", [-1, -1]), ("cum_log_probs", [-1])):
        assert (data_type_name(got_out[name].data_type), list(got_out[name].dims)) == ("TYPE_FP32", dims)
        assert (outs[name]["data_type"], outs[name]["dims"]) == ("TYPE_FP32", dims)
    assert pb.parameters["normalize_log_probs"].string_value == "false"
    assert ENGINE_INPUTS["return_log_probs"].data_type == "TYPE_BOOL"


def test_num_return_sequences_is_rendered_and_sent_as_the_contract_has_it():
    """The rendered tensorrt_llm model takes num_return_sequences (INT32, optional, reshape []) and declares
    sequence_index (INT32 [1]); the fronts send the input only for n > 1 and ask for the output
    (contracts/num-return-sequences.json)."""
    from ziya_trt.engine.request import EngineRequest
    from ziya_trt.wire.arrays import engine_inputs

    ref = facts()["triton_models"]["models"]["tensorrt_llm"]
    pb = parsed(tensorrt_llm_config(trt_cfg()))
    ins, outs = by_name(ref["inputs"]), by_name(ref["outputs"])
    got_in, got_out = {t.name: t for t in pb.input}, {t.name: t for t in pb.output}
    r, t = ins["num_return_sequences"], got_in["num_return_sequences"]
    assert (data_type_name(t.data_type), list(t.dims), t.optional) == (r["data_type"], r["dims"], r["optional"])
    assert r["data_type"] == "TYPE_INT32" and t.optional and list(t.reshape.shape) == []
    o = got_out["sequence_index"]
    assert (data_type_name(o.data_type), list(o.dims)) == (outs["sequence_index"]["data_type"],
                                                          outs["sequence_index"]["dims"]) == ("TYPE_INT32", [1])
    assert "sequence_index" in FRONT_DOOR_ENGINE_OUTPUTS
    three = engine_inputs(EngineRequest([5, 6], 4, num_return_sequences=3))["num_return_sequences"]
    assert three.dtype.name == "int32" and three.tolist() == [[3]]
    assert "num_return_sequences" not in engine_inputs(EngineRequest([5, 6], 4))
    facts_n = json.loads((ROOT / "contracts" / "num-return-sequences.json").read_text())
    assert "num_return_sequences > 1" in facts_n["response"]["sequence_index"]


def test_the_packaged_template_is_the_contracts():
    from ziya_trt.wire.trtllm_template import TEMPLATE_FILE, extract

    fix = json.loads((ROOT / "contracts" / "template-corrections.json").read_text())
    assert json.loads(TEMPLATE_FILE.read_text()) == extract(facts(), fix), "run: bash scripts/refresh_contracts.sh"


def test_the_corrections_only_add_to_the_facts():
    ref = facts()["triton_models"]["models"]["tensorrt_llm"]
    fix = json.loads((ROOT / "contracts" / "template-corrections.json").read_text())["tensorrt_llm"]
    names = {i["name"] for i in ref["inputs"]}
    assert set(fix["allow_ragged_batch"]) <= names
    assert {i["name"] for i in ref["inputs"] if i.get("allow_ragged_batch")} <= set(fix["allow_ragged_batch"])
    keys = {p["key"] for p in ref["parameters"]}
    for a in fix["parameters_added"]:
        assert a["key"] not in keys and a["after"] in keys


def test_our_engine_tensors_are_the_templates():
    from ziya_trt.wire.trtllm_template import template

    ins = {t.name: t for t in template().inputs}
    for spec in ENGINE_INPUTS.values():
        t = ins[spec.name]
        assert (spec.data_type, spec.dims, spec.optional) == (t.data_type, t.dims, t.optional), spec.name


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


def test_only_unset_template_keys_keep_a_placeholder():
    from ziya_trt.serving.repo import Placeholder

    m = tensorrt_llm_config(trt_cfg())
    text = to_pbtxt(m)
    unset = [k for k, v in m.parameters.items() if isinstance(v, Placeholder)]
    assert text.count("${") == len(unset) and "engine_dir" not in str(unset)
    for name in list(ENGINE_INPUTS) + list(FRONT_DOOR_ENGINE_OUTPUTS):
        assert f'name: "{name}"' in text


def test_rendering_refuses_missing_values():
    m = ModelConfig("x", "python", 1, True, (), (), {"tokenizer_dir": ""})
    with pytest.raises(ConfigError, match="tokenizer_dir"):
        to_pbtxt(m)
    with pytest.raises(ConfigError, match=r"\$\{"):
        to_pbtxt(ModelConfig("x", "python", 1, True, (), (), {"a": "${engine_dir}"}))
    spec = next(iter(ENGINE_INPUTS.values()))
    with pytest.raises(ConfigError, match="no data type"):
        to_pbtxt(ModelConfig("x", "python", 1, True, (), (replace(spec, data_type="${logits_datatype}"),)))


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
