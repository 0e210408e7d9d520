"""Validation finds every injected defect in a fixture checkpoint, all at once."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from engine_build.validate import CheckpointError, ProblemKind, safetensors_header, validate_checkpoint
from ziya_trt.fixtures import tiny


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The tiny checkpoint saved in several safetensors shards with an index."""
    import torch
    from transformers import LlamaForCausalLM

    d = tiny.build_tokenizer(tmp_path_factory.mktemp("sharded"))
    torch.manual_seed(0)
    LlamaForCausalLM(tiny.ziya_like_config(1000)).to(torch.bfloat16).save_pretrained(d, max_shard_size="100KB")
    return d


def copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / "ckpt")


def test_clean_checkpoint_passes(sharded):
    rep = validate_checkpoint(sharded)
    assert len(rep.weight_files) > 1 and rep.tensors == len(rep.spec.shapes())
    assert rep.dtypes == {"bfloat16"} and rep.tokenizer_vocab == 1000


def test_missing_shard(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    victim = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]["lm_head.weight"]
    (d / victim).unlink()
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    assert ei.value.kinds() == {ProblemKind.MISSING_SHARD} and victim in str(ei.value)


def test_wrong_shape(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    index = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    f = d / index["model.layers.1.mlp.up_proj.weight"]
    tensors = load_file(f)
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1]
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    assert ei.value.kinds() == {ProblemKind.SHAPE} and "up_proj" in str(ei.value)


def test_vocab_mismatch_between_tokenizer_and_config(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = 900
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    # the tokenizer no longer fits the embedding, and every vocab-shaped tensor disagrees with the config
    assert ProblemKind.VOCAB in ei.value.kinds() and ProblemKind.SHAPE in ei.value.kinds()


def test_missing_special_tokens(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    tiny.build_tokenizer(d, chat_tokens=False)
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    assert ei.value.kinds() == {ProblemKind.TOKENIZER} and "<human>" in str(ei.value) and "<bot>" in str(ei.value)


def test_wrong_architecture(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    assert ei.value.kinds() == {ProblemKind.ARCHITECTURE}


def test_every_defect_reported_at_once(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    index = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    (d / index["model.embed_tokens.weight"]).unlink()
    tiny.build_tokenizer(d, chat_tokens=False)
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    assert {ProblemKind.ARCHITECTURE, ProblemKind.MISSING_SHARD, ProblemKind.TOKENIZER} <= ei.value.kinds()


def test_torch_bin_checkpoints_are_read_without_loading(tiny_ckpt, tmp_path):
    import torch

    d = shutil.copytree(tiny_ckpt, tmp_path / "bin")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    rep = validate_checkpoint(d)
    assert rep.weight_files == ["pytorch_model.bin"] and rep.dtypes == {"bfloat16"}


def test_header_reader(tiny_ckpt):
    h = safetensors_header(tiny_ckpt / "model.safetensors")
    assert h["model.embed_tokens.weight"] == ("BF16", (1000, 64))


def test_a_truncated_safetensors_file_is_found(tiny_ckpt, tmp_path):
    d = shutil.copytree(tiny_ckpt, tmp_path / "cut")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # an interrupted download
    with pytest.raises(CheckpointError) as ei:
        validate_checkpoint(d)
    assert ei.value.kinds() == {ProblemKind.TRUNCATED} and "bytes shorter than its header says" in str(ei.value)
