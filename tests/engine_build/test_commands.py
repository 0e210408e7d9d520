"""Every flag and value we generate must exist in the TensorRT-LLM 1.2.1 facts."""

from pathlib import Path

import pytest

from engine_build.commands import build_steps, llm_api_settings
from engine_build.plan import make_plan
from tests.engine_build.test_plan import ZIYA2
from tests.contracts import facts


def options(section: str) -> dict:
    f = facts()[section]
    rows = f["options"] + f.get("plugin_options", [])
    out = {}
    for o in rows:
        out[o["name"]] = o
        for a in o.get("aliases", []):
            out[a] = o
    return out


def check_step(step, section):
    known = options(section)
    for flag, value in step.flags().items():
        assert flag in known, f"{step.name}: {flag} is not a 1.2.1 {section} option"
        o = known[flag]
        if o.get("choices") and value is not None:
            assert value in [str(c) for c in o["choices"]], f"{flag} {value} not in {o['choices']}"
        if o["type"] == "int":
            int(value)
        if o["type"] == "store_true":
            assert value is None


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
@pytest.mark.parametrize("tp", [1, 2])
def test_commands_use_only_1_2_1_flags(dtype, tp):
    plan = make_plan("/models/ziya2", "h100-80gb", dtype, tp, spec=ZIYA2)
    ckpt, build = build_steps(plan, Path("/work"), Path("/engine"))
    section = "convert_checkpoint_llama" if dtype == "bf16" else "quantize"
    assert ckpt.argv[1] == facts()[section]["path"]
    check_step(ckpt, section)
    check_step(build, "trtllm_build")
    b = build.flags()
    assert ckpt.flags()["--tp_size"] == str(tp) and "--tp_size" not in b  # tp/pp go to convert/quantize
    assert b["--max_batch_size"] == str(plan.max_batch_size) and b["--max_seq_len"] == str(plan.max_seq_len)
    assert b["--gpt_attention_plugin"] == "bfloat16" and b["--context_fmha"] == "enable"
    assert b["--kv_cache_type"] == "paged" and b["--remove_input_padding"] == "enable" and b["--use_fused_mlp"] == "enable"
    assert ("--reduce_fusion" in b) == (tp > 1)
    assert "--norm_quant_fusion" not in b  # TensorRT-LLM 1.2 keeps it only for NVFP4
    assert "--use_fused_rmsnorm" not in b
    if dtype == "fp8":
        q = ckpt.flags()
        assert (q["--qformat"], q["--kv_cache_dtype"]) == ("fp8", "fp8")
        assert Path(q["--calib_dataset"]).is_dir()


def test_default_calibration_set_is_bilingual():
    from engine_build.commands import CALIB_DEFAULT
    import json

    rows = [json.loads(line)["text"] for line in (CALIB_DEFAULT / "calib.jsonl").read_text().splitlines()]
    zh = sum(any("\u4e00" <= ch <= "\u9fff" for ch in r) for r in rows)
    en = sum(any(ch.isascii() and ch.isalpha() for ch in r) for r in rows)
    assert len(rows) >= 256 and zh >= 100 and en >= 100


def test_llm_api_fields_exist_in_the_facts():
    api = facts()["llm_api"]
    s = llm_api_settings(make_plan("/m", "h200", "fp8", 2, spec=ZIYA2))
    for k in s["BuildConfig"]:
        assert k in api["BuildConfig"]["fields"], k
    for k in s["KvCacheConfig"]:
        assert k in api["KvCacheConfig"]["fields"], k
    for k in s["QuantConfig"]:
        assert k in api["QuantConfig"]["fields"], k
    assert s["QuantConfig"]["quant_algo"] in api["QuantAlgo"]["members_verified_in_source"]
    for k in s["CalibConfig"]:
        assert k in api["CalibConfig"]["fields"], k


def test_llm_api_calibration_matches_the_quantize_step():
    plan = make_plan("/m", "h200", "fp8", 2, spec=ZIYA2)
    calib = llm_api_settings(plan, Path("/data/calib"))["CalibConfig"]
    (quantize, _) = build_steps(plan, Path("/w"), Path("/e"), Path("/data/calib"))
    flags = quantize.flags()
    assert calib["calib_dataset"] == flags["--calib_dataset"] == "/data/calib"
    assert calib["calib_max_seq_length"] == int(flags["--calib_max_seq_length"]) == min(plan.max_input_len, 2048)
    assert calib["calib_batches"] * calib["calib_batch_size"] == int(flags["--calib_size"])


def test_llm_api_names_the_tensorrt_engine_class():
    """In 1.x ``tensorrt_llm.LLM`` is the PyTorch backend; engines are built by the class the facts name."""
    import re

    said = facts()["llm_api"]["backend_selection"]["tensorrt_engine_LLM"]
    module, name = re.match(r"from ([\w.]+) import (\w+)", said).groups()
    assert llm_api_settings(make_plan("/m", "h200", "bf16", spec=ZIYA2))["class"] == f"{module}.{name}"
    assert f"{module}.{name}" != "tensorrt_llm.LLM"


def test_the_manifest_records_the_calibration_set_used(tiny_ckpt, tmp_path):
    import json

    from engine_build.build import run_build

    m = run_build(make_plan(tiny_ckpt, "h200", "fp8"), tmp_path / "e", tmp_path / "w", {}, calib=tmp_path / "cal",
                  dry_run=True, progress=lambda s: None, source_candidates=())
    data = json.loads(m.read_text())
    assert data["llm_api_equivalent"]["CalibConfig"]["calib_dataset"] == str(tmp_path / "cal")
    assert str(tmp_path / "cal") in data["commands"][0]
