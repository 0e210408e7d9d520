import json

import pytest
import sentencepiece as spm

from ziya_trt.fixtures import tiny
from ziya_trt.errors import TokenizerError
from ziya_trt.text.tokenizer import load_tokenizer

CARD_PROMPT = "<human>:帮我写一份去西安的旅游计划\n<bot>:"


def test_card_prompt_tokenises_exactly_like_the_cards_own_code(tok, tiny_ckpt):
    """The model card tokenises with ``AutoTokenizer.from_pretrained(ckpt)(prompt).input_ids``: added tokens
    split the text, and each stretch gets sentencepiece's dummy prefix (sentencepiece on the whole string
    would put it before ``<human>`` instead)."""
    from transformers import AutoTokenizer

    card = AutoTokenizer.from_pretrained(str(tiny_ckpt))(CARD_PROMPT).input_ids
    assert tok.encode(CARD_PROMPT) == card
    sp = spm.SentencePieceProcessor(model_file=str(tiny_ckpt / "tokenizer.model"))
    assert card != [1] + sp.encode(CARD_PROMPT)  # the dummy prefix lands after each marker instead
    assert tok.special.human in tok.encode(CARD_PROMPT) and tok.special.bot in tok.encode(CARD_PROMPT)


def test_special_ids_are_llamas(tok):
    s = tok.special
    assert (s.unk, s.bos, s.eos, s.human, s.bot) == (0, 1, 2, 3, 4)
    assert s.pad is None and tok.pad_id == 0  # Ziya2 has no pad piece; the engines get 0


@pytest.mark.parametrize(
    "text",
    ["你好，世界", "rare: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ǅ ꙮ", "emoji 😀👩‍👩‍👧 🌸", "  leading and trailing  ", "tabs\tand\nnewlines", "混合 mixed 123"],
)
def test_byte_fallback_round_trips(tok, text):
    ids = tok.encode(text, add_bos=False)
    assert tok.decode(ids) == text == tok.sp.decode(ids)


def test_rare_characters_really_use_byte_pieces(tok):
    ids = tok.encode("ꙮ", add_bos=False)
    assert any(tok.table.raw[i] is not None for i in ids)


def test_missing_chat_tokens_are_all_reported(tmp_path):
    d = tiny.build_tokenizer(tmp_path / "plain", chat_tokens=False)
    with pytest.raises(TokenizerError) as ei:
        load_tokenizer(d)
    assert any("<human>" in p for p in ei.value.problems)
    assert any("<bot>" in p for p in ei.value.problems)
    assert load_tokenizer(d, require_chat_tokens=False).eos_id == 2


def test_missing_directory_and_bad_config(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    d = tiny.build_tokenizer(tmp_path / "bad")
    (d / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(d)


def test_unloadable_directory(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(TokenizerError, match="no vocabulary file"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(TokenizerError, match="cannot be loaded"):
        load_tokenizer(tmp_path)


def test_tiny_model_is_shaped_like_ziya(tiny_ckpt):
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["vocab_size"] == 1000 and cfg["rms_norm_eps"] == 1e-6
    assert cfg["num_attention_heads"] == cfg["num_key_value_heads"]  # no GQA, like Ziya2-13B
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    assert (tiny_ckpt / "model.safetensors").exists()


def test_another_models_tokenizer_is_refused_with_the_way_to_serve_it(chatml_dir):
    with pytest.raises(TokenizerError) as ei:
        load_tokenizer(chatml_dir, require_chat_tokens=True)
    assert "missing added token <human>" in str(ei.value) and "--template chat_template" in str(ei.value)
    assert load_tokenizer(chatml_dir, require_chat_tokens=False).vocab_size > 0
