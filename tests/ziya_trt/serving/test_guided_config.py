"""Guided decoding's configuration (contracts/guided-decoding.json): the tokenizer info JSON that `ziya-trt build`
writes and `serve --engine tensorrt_llm` checks, the parameters rendered for each engine, and the load checks the
stand-ins make as the tensorrt_llm backend does."""

import json
from pathlib import Path

import pytest

from engine_build.build import write_guided_info
from ziya_trt.engine.guided import TOKENIZER_INFO_FILE, read_tokenizer_info, tokenizer_info_dict
from ziya_trt.serving.config import ConfigError, ServeConfig
from ziya_trt.serving.repo import check_tokenizer_info, model_configs, render_repo
from ziya_trt.serving.triton.backend_rules import LoadedModel


def params(m) -> dict[str, str]:
    return {k: str(v) for k, v in m.parameters.items()}


def test_build_writes_the_tokenizer_info_beside_the_engine_and_serve_checks_it(tiny_ckpt, chatml_dir, tmp_path, tok):
    eng = tmp_path / "engine"
    cfg = ServeConfig(engine="tensorrt_llm", engine_dir=eng, tokenizer_dir=tiny_ckpt)
    with pytest.raises(ConfigError, match=f"{TOKENIZER_INFO_FILE} not found.*ziya-trt build.*--no-guided-decoding"):
        check_tokenizer_info(cfg)
    path = write_guided_info(eng, tiny_ckpt)
    assert path == eng / TOKENIZER_INFO_FILE and read_tokenizer_info(path) == tokenizer_info_dict(tok.hf)
    assert check_tokenizer_info(cfg) == path
    assert check_tokenizer_info(cfg.with_(guided_decoding=False)) is None  # off: nothing to check
    # made from another tokenizer: refused, saying what differs
    write_guided_info(eng, chatml_dir)
    with pytest.raises(ConfigError, match="was not made from the tokenizer"):
        check_tokenizer_info(cfg)
    path.write_text(json.dumps({"encoded_vocab": ["a"], "stop_token_ids": [0]}))
    with pytest.raises(ConfigError, match="lacks tokenizer_str"):
        check_tokenizer_info(cfg)
    notes = []
    assert write_guided_info(tmp_path / "e2", tmp_path / "no-tokenizer", notes.append) is None and notes


def test_each_engine_renders_guided_decoding_as_it_has_it(tiny_ckpt, tmp_path):
    trt = params(model_configs(ServeConfig(engine="tensorrt_llm", engine_dir="/e", tokenizer_dir=tiny_ckpt))[0])
    assert trt["guided_decoding_backend"] == "xgrammar"
    assert trt["xgrammar_tokenizer_info_path"] == f"/e/{TOKENIZER_INFO_FILE}"
    # the reference engine: the file written into its own model directory, from the tokenizer
    ref = ServeConfig(engine="reference", model_dir=tiny_ckpt, tokenizer_dir=tiny_ckpt)
    repo = render_repo(ref, tmp_path / "ref")
    info = (repo / "reference" / TOKENIZER_INFO_FILE).resolve()  # absolute: the model's process starts elsewhere
    assert read_tokenizer_info(info)["stop_token_ids"] == [2]
    assert params(model_configs(ref, info)[0])["xgrammar_tokenizer_info_path"] == str(info)
    assert f'string_value: "{info}"' in (repo / "reference" / "config.pbtxt").read_text()
    # synthetic, and any engine with --no-guided-decoding: the backend's "off" (the placeholders)
    for cfg in (ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt), ref.with_(guided_decoding=False)):
        p = params(model_configs(cfg)[0])
        assert p["guided_decoding_backend"] == "${guided_decoding_backend}"
        assert p["xgrammar_tokenizer_info_path"] == "${xgrammar_tokenizer_info_path}"
    off = render_repo(ref.with_(guided_decoding=False), tmp_path / "off")
    assert not (off / "reference" / TOKENIZER_INFO_FILE).exists()


def loaded(tmp_path, backend: str, path: str | Path) -> LoadedModel:
    from ziya_trt.wire.trtllm_template import template

    values = {k: "${" + k + "}" for k in template().keys} | {"guided_decoding_backend": backend,
                                                             "xgrammar_tokenizer_info_path": str(path)}
    return LoadedModel("reference", frozenset(values), frozenset(), values)


def test_the_stand_ins_refuse_to_load_where_the_backend_would(tmp_path, tiny_ckpt):
    good = write_guided_info(tmp_path, tiny_ckpt)
    assert loaded(tmp_path, "xgrammar", good).guided_tokenizer_info == good
    loaded(tmp_path, "xgrammar", good).check_load()
    # off, whatever the other says: either one empty or its placeholder
    for backend, path in (("${guided_decoding_backend}", good), ("", good), ("xgrammar", ""),
                          ("xgrammar", "${xgrammar_tokenizer_info_path}"), ("llguidance", "")):
        m = loaded(tmp_path, backend, path)
        assert m.guided_tokenizer_info is None
        m.check_load()
    with pytest.raises(ConfigError, match="Xgrammar's tokenizer info path at .* does not exist"):
        loaded(tmp_path, "xgrammar", tmp_path / "nope.json").check_load()
    with pytest.raises(ConfigError, match="currently supported with 'xgrammar' backend"):
        loaded(tmp_path, "llguidance", good).check_load()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"encoded_vocab": [], "tokenizer_str": "{}"}))
    with pytest.raises(ConfigError, match="lacks stop_token_ids"):
        loaded(tmp_path, "xgrammar", bad).check_load()
