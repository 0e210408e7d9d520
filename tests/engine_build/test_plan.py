import pytest

from engine_build.gpus import GPUS, get_gpu
from engine_build.plan import KV_FRACTION, RUNTIME_RESERVE_BYTES, Workload, activation_bytes, make_plan
from engine_build.spec import ModelSpec
from ziya_trt.errors import InvalidRequestError

ZIYA2 = ModelSpec.from_config(dict(
    architectures=["LlamaForCausalLM"], hidden_size=5120, num_hidden_layers=40, num_attention_heads=40,
    num_key_value_heads=40, intermediate_size=13824, vocab_size=39410, max_position_embeddings=4096,
    rope_theta=1e4, rms_norm_eps=1e-6, torch_dtype="bfloat16"))


def test_ziya2_figures_by_hand():
    per_layer = 4 * 5120 * 5120 + 3 * 5120 * 13824 + 2 * 5120
    params = 40 * per_layer + 2 * 39410 * 5120 + 5120
    assert ZIYA2.params == params == 13_091_742_720  # 13.09 B
    assert ZIYA2.weight_bytes("bf16") == 26_183_485_440  # 26.2 GB
    assert ZIYA2.kv_bytes_per_token("bf16") == 40 * 2 * 5120 * 2 == 819_200
    assert ZIYA2.kv_bytes_per_token("fp8") == 409_600
    linear = 40 * (4 * 5120 * 5120 + 3 * 5120 * 13824)
    assert ZIYA2.weight_bytes("fp8") == linear + 2 * (params - linear)


def expected_batch(gpu, dtype, tp, isl=2048, osl=512):
    """The plan's arithmetic, written out independently."""
    mem = GPUS[gpu].memory_mib * 1024**2
    w = -(-ZIYA2.weight_bytes(dtype) // tp)
    act = 8192 * ((3 * 13824 + 6 * 5120) * 2 // tp)
    kv_tok = -(-ZIYA2.kv_bytes_per_token(dtype) // tp)
    tokens = int((mem - w - RUNTIME_RESERVE_BYTES - act) * KV_FRACTION) // kv_tok
    return tokens, tokens // (isl + osl)


@pytest.mark.parametrize("gpu", ["h100-80gb", "h200"])
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_h100_h200_plans(gpu, dtype):
    p = make_plan("ziya2", gpu, dtype, 1, spec=ZIYA2)
    tokens, batch = expected_batch(gpu, dtype, 1)
    assert p.fits and p.kv_cache_tokens == tokens and p.max_batch_size == batch
    assert (p.max_input_len, p.max_seq_len, p.max_num_tokens) == (2048, 2560, 8192)
    assert p.norm_quant_fusion == (dtype == "fp8") and not p.reduce_fusion


def test_known_values():
    # H100-80GB bf16: 81559 MiB - 26.18 GB weights - 2 GiB - 1.19 GB activations, x0.9, / 819200 B
    assert make_plan("z", "h100-80gb", "bf16", spec=ZIYA2).max_batch_size == 24
    assert make_plan("z", "h200", "fp8", spec=ZIYA2).max_batch_size == 114
    assert make_plan("z", "h200", "fp8", spec=ZIYA2).max_batch_size > 2 * make_plan("z", "h200", "bf16", spec=ZIYA2).max_batch_size


def test_bf16_on_a_40gb_card_needs_tp2():
    one = make_plan("z", "a100-40gb", "bf16", 1, spec=ZIYA2)
    assert not one.fits and "fewer than min_batch 8" in one.problems[0]
    assert any("--tp 2" in s for s in one.suggestions)
    two = make_plan("z", "a100-40gb", "bf16", 2, spec=ZIYA2)
    assert two.fits and two.reduce_fusion and two.weight_bytes_per_gpu == ZIYA2.weight_bytes("bf16") // 2
    assert two.vocab_padding_needed is False and two.padded_vocab_size == 39424  # 39410 is even


def test_too_big_at_all():
    p = make_plan("z", "a100-40gb", "bf16", 1, spec=ZIYA2, workload=Workload(2048, 2048, 1))
    assert p.fits  # one 4096-token request fits
    big = ModelSpec.from_config(ZIYA2.to_dict() | dict(num_hidden_layers=120, num_attention_heads=40))
    p = make_plan("z", "l40s", "bf16", 1, spec=big)
    assert not p.fits and "do not fit" in p.problems[0] and any("fp8" in s for s in p.suggestions)


def test_fp8_needs_fp8_hardware_and_limits_are_checked():
    p = make_plan("z", "a100-80gb", "fp8", spec=ZIYA2)
    assert not p.fits and "no FP8" in p.problems[0]
    p = make_plan("z", "h100", "bf16", spec=ZIYA2, workload=Workload(4000, 200))
    assert not p.fits and "4096 positions" in p.problems[0]
    with pytest.raises(InvalidRequestError, match="power of two"):
        make_plan("z", "h100", "bf16", tp=3, spec=ZIYA2)
    with pytest.raises(InvalidRequestError, match="unknown GPU"):
        get_gpu("tpu-v5")


def test_plan_json_round_trip(tmp_path):
    from engine_build.plan import BuildPlan

    p = make_plan("z", "h200", "fp8", 2, spec=ZIYA2)
    assert BuildPlan.load(p.save(tmp_path / "plan.json")) == p
    assert activation_bytes(ZIYA2, 8192, 2) == p.activation_bytes_per_gpu
