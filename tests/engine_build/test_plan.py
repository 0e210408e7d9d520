import json
import shutil
from dataclasses import asdict, replace

import pytest

from engine_build.fetch import DEFAULT_MODEL, FetchError, fetch_checkpoint, looks_like_local_path
from engine_build.gpus import ALIASES, GPUS, get_gpu, resolve_gpu
from engine_build.plan import (
    KV_FRACTION,
    NOTHING_FITS,
    RUNTIME_RESERVE_BYTES,
    BuildPlan,
    Workload,
    activation_bytes,
    make_plan,
)
from engine_build.spec import BUILTIN_SHAPES, ZIYA2_13B_CHAT, ModelSpec, SpecError, resolve_shape
from ziya_trt.cli import main
from ziya_trt.errors import InvalidRequestError

ZIYA2 = ZIYA2_13B_CHAT  # the built-in shape is the single source; tests/engine_build/test_commands.py imports it


def test_builtin_shape_is_ziya2_13b_chat():
    s = ZIYA2
    assert (s.architecture, s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.intermediate_size,
            s.vocab_size, s.max_position_embeddings, s.rope_theta, s.rms_norm_eps, s.tie_word_embeddings,
            s.dtype) == ("LlamaForCausalLM", 5120, 40, 40, 40, 13824, 39410, 4096, 1e4, 1e-6, False, "bfloat16")
    assert s.head_dim == 128 and s.kv_dim == 5120  # no GQA
    assert BUILTIN_SHAPES[DEFAULT_MODEL.lower()] is ZIYA2


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
    """The plan's arithmetic, written out independently; ``gpu`` is a table name or a memory in MiB."""
    mem = (gpu if isinstance(gpu, int) else GPUS[gpu].memory_mib) * 1024**2
    w = -(-ZIYA2.weight_bytes(dtype) // tp)
    act = max(isl, 8192) * ((3 * 13824 + 6 * 5120) * 2 // tp)
    kv_tok = -(-ZIYA2.kv_bytes_per_token(dtype) // tp)
    tokens = int((mem - w - RUNTIME_RESERVE_BYTES - act) * KV_FRACTION) // kv_tok
    return tokens, tokens // (isl + osl)


def plan(gpu, dtype="bf16", tp=1, pp=1, workload=None, spec=ZIYA2):
    return make_plan(None, gpu, dtype, tp, pp, workload or Workload(), spec=spec)


@pytest.mark.parametrize("gpu", ["h100-80gb", "h200"])
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_h100_h200_plans(gpu, dtype):
    p = plan(gpu, dtype)
    tokens, batch = expected_batch(gpu, dtype, 1)
    assert p.fits and p.kv_cache_tokens == tokens and p.max_batch_size == batch
    assert (p.max_input_len, p.max_seq_len, p.max_num_tokens) == (2048, 2560, 8192)
    assert not p.norm_quant_fusion and not p.reduce_fusion


def test_known_values():
    # H100-80GB bf16: 81559 MiB - 26.18 GB weights - 2 GiB - 1.19 GB activations, x0.9, / 819200 B
    assert plan("h100-80gb").max_batch_size == 24
    assert plan("h200", "fp8").max_batch_size == 114
    assert plan("h200", "fp8").max_batch_size > 2 * plan("h200").max_batch_size


# --- the GPU table ---------------------------------------------------------------------------------------

NOMINAL_GB = {"a10g-24gb": 24, "l4-24gb": 24, "l40s": 48, "a100-40gb": 40, "a100-80gb": 80, "h100-pcie-80gb": 80,
              "h100-80gb": 80, "h100-nvl-94gb": 94, "h20-96gb": 96, "h200": 141, "b200": 180, "gb200": 186}


def test_gpu_table_has_todays_inference_gpus():
    assert set(GPUS) == set(NOMINAL_GB)
    for name, gb in NOMINAL_GB.items():
        g = GPUS[name]
        # nvidia-smi reports a little under the nominal size (ECC on the GDDR cards takes 1/16)
        assert 0.93 <= g.memory_gib / gb <= 1.0, name
        assert g.arch in ("ampere", "ada", "hopper", "blackwell") and g.fp8 == (g.arch != "ampere")
        assert g.bandwidth_tb_s > 0 and g.smi_name.startswith("NVIDIA") and g.memory_from == "nvidia-smi"
    assert [GPUS[n].memory_mib for n in ("a10g-24gb", "l4-24gb", "h100-nvl-94gb", "h20-96gb", "gb200")] == \
        [23028, 23034, 95830, 97871, 189471]


def test_old_names_and_aliases_still_work():
    old = {"a100-40gb": 40960, "a100-80gb": 81920, "l40s": 46068, "h100-80gb": 81559, "h200": 143771, "b200": 183359,
           "h100": 81559, "a100": 81920, "h200-141gb": 143771, "b200-180gb": 183359}
    assert {n: get_gpu(n).memory_mib for n in old} == old
    assert get_gpu("H100-SXM").name == "h100-80gb" and get_gpu("a10g").name == "a10g-24gb"
    assert all(v in GPUS for v in ALIASES.values())


def test_gpu_given_by_memory():
    g = resolve_gpu(None, 24)
    assert (g.name, g.memory_mib, g.fp8, g.custom) == ("custom-24gib", 24 * 1024, False, True) and "assumed" in g.note
    assert resolve_gpu("rtx-4090", 24, True).fp8 and resolve_gpu("rtx-4090", 24, True).note == ""
    h = resolve_gpu("h100", 70)  # a table GPU with its memory replaced (a MIG slice, memory held by others)
    assert (h.name, h.memory_mib, h.fp8, h.arch) == ("h100-80gb", 70 * 1024, True, "hopper")
    assert resolve_gpu() == GPUS["h100-80gb"] and resolve_gpu("a10g") == GPUS["a10g-24gb"]
    with pytest.raises(InvalidRequestError, match="has no FP8"):
        resolve_gpu("a100-80gb", fp8=True)
    with pytest.raises(InvalidRequestError, match="must be positive"):
        resolve_gpu(None, 0)
    with pytest.raises(InvalidRequestError, match="unknown GPU.*--gpu-mem-gib"):
        get_gpu("tpu-v5")


def test_plan_on_a_gpu_given_by_memory():
    one = plan(resolve_gpu(None, 24))
    assert not one.fits and one.problem_kinds == ["weights"] and one.gpu_memory_mib == 24576
    assert any("assumed absent" in n for n in one.notes)
    two = plan(resolve_gpu(None, 24), tp=2)
    assert two.fits and (two.kv_cache_tokens, two.max_batch_size) == expected_batch(24576, "bf16", 2) == (21839, 8)
    p = plan(resolve_gpu(None, 24), "fp8")
    assert "no_fp8" in p.problem_kinds and "assumed" in p.problems[0]
    assert plan(resolve_gpu(None, 24, True), "fp8", tp=2).fits


# --- problems and suggestions ----------------------------------------------------------------------------


def flags_of(suggestion: str) -> list[str]:
    return suggestion.split(":")[0].split()


def replan(base: dict, suggestion: str) -> BuildPlan:
    """Apply a suggestion's flags to the plan's inputs and plan again."""
    kw, w = dict(base), asdict(base.get("workload", Workload()))
    toks = flags_of(suggestion)
    for i, t in enumerate(toks):
        v = toks[i + 1] if i + 1 < len(toks) else ""
        if t == "--gpu-fp8":
            kw["gpu"] = replace(kw["gpu"], fp8=True, note="")
        elif t in ("--dtype", "--gpu"):
            kw[t[2:]] = v
        elif t in ("--tp", "--pp"):
            kw[t[2:]] = int(v)
        elif t in ("--isl", "--osl", "--min-batch"):
            w[t[2:].replace("-", "_")] = int(v)
        else:
            assert not t.startswith("--"), f"unknown flag {t} in {suggestion!r}"
    kw["workload"] = Workload(**w)
    return plan(**kw)


BIG = ModelSpec.from_config(ZIYA2.to_dict() | dict(num_hidden_layers=120, num_attention_heads=40))
CASES = [dict(gpu="a10g-24gb"), dict(gpu="a100-40gb"), dict(gpu="a100-40gb", dtype="fp8"),
         dict(gpu="a100-80gb", dtype="fp8"), dict(gpu="l4", dtype="fp8"), dict(gpu="h100", tp=16),
         dict(gpu="h100", pp=3), dict(gpu="h100", workload=Workload(4000, 200)),
         dict(gpu="a100-40gb", workload=Workload(4000, 500)), dict(gpu="h100", workload=Workload(8000, 500)),
         dict(gpu=resolve_gpu(None, 24)), dict(gpu=resolve_gpu("rtx-4090", 24), dtype="fp8"),
         dict(gpu="l40s", spec=BIG)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v)[:12] for v in c.values()))
def test_every_suggestion_is_true(case):
    p = plan(**case)
    assert not p.fits and p.suggestions and p.suggestions != [NOTHING_FITS]
    for s in p.suggestions:
        again = replan(case, s)
        assert again.fits, s
        assert f"max_batch_size {again.max_batch_size} " in s and f"({again.kv_cache_tokens:,} KV tokens" in s


def test_bf16_on_a_40gb_card_exact_suggestions():
    one = plan("a100-40gb")
    tokens, batch = expected_batch("a100-40gb", "bf16", 1)
    assert not one.fits and batch == 5 and "fewer than min_batch 8" in one.problems[0]
    per_request = tokens // 8
    isl, osl = 2048 * per_request // 2560, per_request - 2048 * per_request // 2560
    assert [" ".join(flags_of(s)) for s in one.suggestions] == [
        "--tp 2", "--gpu l40s", f"--min-batch {batch}", f"--isl {isl} --osl {osl}"]
    # l40s is the smallest GPU in the table, larger than an A100-40GB, where bf16 tp1 holds 8 requests
    bigger = sorted((g.memory_mib, n) for n, g in GPUS.items() if g.memory_mib > 40960)
    assert next(n for m, n in bigger if expected_batch(m, "bf16", 1)[1] >= 8) == "l40s"
    assert f"max_batch_size {expected_batch('l40s', 'bf16', 1)[1]} " in one.suggestions[1]
    two = plan("a100-40gb", tp=2)
    assert two.fits and two.reduce_fusion and two.weight_bytes_per_gpu == ZIYA2.weight_bytes("bf16") // 2
    assert two.max_batch_size == expected_batch("a100-40gb", "bf16", 2)[1] == 23
    assert two.vocab_padding_needed is False and two.padded_vocab_size == 39424  # 39410 is even


def test_no_fp8_suggestion_on_a_gpu_without_fp8():
    for gpu in ("a10g-24gb", "a100-40gb", resolve_gpu(None, 24)):
        p = plan(gpu)
        assert not p.fits and not any("fp8" in s.lower() for s in p.suggestions), p.suggestions


def test_a10g_tp2_is_not_suggested_alone_because_it_does_not_fit():
    assert expected_batch("a10g-24gb", "bf16", 2)[1] == 7 and expected_batch("a10g-24gb", "bf16", 4)[1] == 26
    flags = [flags_of(s) for s in plan("a10g-24gb").suggestions]
    assert ["--tp", "2"] not in flags and ["--tp", "4"] in flags


def test_fp8_on_an_ampere_gpu_suggests_bf16_not_tp():
    p = plan("a100-80gb", "fp8")
    assert not p.fits and p.problem_kinds == ["no_fp8"] and "no FP8" in p.problems[0]
    first = flags_of(p.suggestions[0])
    assert first == ["--dtype", "bf16"]
    assert f"max_batch_size {expected_batch('a100-80gb', 'bf16', 1)[1]} " in p.suggestions[0]
    assert not any("--tp" in f for s in p.suggestions for f in flags_of(s))
    assert all(GPUS[flags_of(s)[1]].fp8 for s in p.suggestions if flags_of(s)[0] == "--gpu")
    # A100-40GB: bf16 alone does not fit, so it is suggested only together with what makes it fit
    flags = [flags_of(s) for s in plan("a100-40gb", "fp8").suggestions]
    assert ["--dtype", "bf16"] not in flags and ["--dtype", "bf16", "--tp", "2"] in flags


def test_positions_problem_suggests_shorter_requests_only():
    p = plan("h100", workload=Workload(4000, 200))
    assert not p.fits and p.problem_kinds == ["positions"] and "4096 positions" in p.problems[0]
    assert [flags_of(s) for s in p.suggestions] == [["--isl", str(4096 - 200)], ["--osl", str(4096 - 4000)]]


def test_tp_is_suggested_only_when_it_divides_the_heads():
    five = ModelSpec.from_config(ZIYA2.to_dict() | dict(num_hidden_layers=40, num_attention_heads=5))
    p = plan("a100-40gb", spec=five)
    assert not p.fits and p.suggestions and not any("--tp" in s for s in p.suggestions)
    p = plan("h100", tp=16)
    assert p.problem_kinds == ["tp"] and [flags_of(s) for s in p.suggestions] == [["--tp", "8"], ["--tp", "4"]]


def test_too_big_at_all():
    assert plan("a100-40gb", workload=Workload(2048, 2048, 1)).fits  # one 4096-token request fits
    p = plan("l40s", spec=BIG)
    assert not p.fits and "do not fit" in p.problems[0] and any("fp8" in s for s in p.suggestions)
    huge = ModelSpec.from_config(ZIYA2.to_dict() | dict(num_hidden_layers=2000, num_attention_heads=40))
    assert plan("a10g-24gb", spec=huge).suggestions == [NOTHING_FITS]


def test_limits_are_checked():
    with pytest.raises(InvalidRequestError, match="power of two"):
        plan("h100", tp=3)
    with pytest.raises(InvalidRequestError, match="checkpoint directory or a model spec"):
        make_plan(None, "h100")


# --- where the shape comes from, and plan.json -----------------------------------------------------------


def test_local_path_or_modelscope_id():
    for local in ("/models/z", "./z", "../z", "~/z", "a/b/c", "org/name/"):
        assert looks_like_local_path(local), local
    for ms in (DEFAULT_MODEL, "org/name", "ziya"):
        assert not looks_like_local_path(ms), ms


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match="no such directory"):
        fetch_checkpoint(str(tmp_path / "nope"))  # never sent to ModelScope as an id
    with pytest.raises(FetchError, match="no such directory"):
        resolve_shape("./nope-not-here")
    (tmp_path / "f").write_text("x")
    with pytest.raises(FetchError, match="is a file"):
        resolve_shape(str(tmp_path / "f"))
    with pytest.raises(SpecError, match="neither a checkpoint directory nor a ModelScope id"):
        resolve_shape("ziya")


def test_shape_from_cache_or_builtin(tiny_ckpt, tmp_path):
    b = resolve_shape(DEFAULT_MODEL, cache_dir=tmp_path / "empty")
    assert b.spec is ZIYA2 and b.model_dir is None and "built-in" in b.note
    with pytest.raises(SpecError, match="no built-in shape"):
        resolve_shape("Other/Model-7B", cache_dir=tmp_path / "empty")
    snap = tmp_path / "ms" / "models" / "Fengshenbang--Ziya2-13B-Chat" / "snapshots" / "rev1"
    shutil.copytree(tiny_ckpt, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "master").write_text("rev1")
    c = resolve_shape(DEFAULT_MODEL, cache_dir=tmp_path / "ms")
    assert c.model_dir == snap.resolve() and c.spec == ModelSpec.from_dir(tiny_ckpt) and "cache" in c.note


def test_plan_json_round_trip(tmp_path):
    p = plan("h200", "fp8", 2)
    assert BuildPlan.load(p.save(tmp_path / "plan.json")) == p
    assert activation_bytes(ZIYA2, 8192, 2) == p.activation_bytes_per_gpu


def test_model_dir_is_absolute(tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tiny_ckpt.parent)
    p = make_plan(tiny_ckpt.name, "h200")
    assert p.model_dir == str(tiny_ckpt.resolve()) and p.model_dir.startswith("/")


def test_older_plans_still_load(tmp_path, monkeypatch):
    old = {k: v for k, v in asdict(plan("h200")).items() if k not in ("model_id", "gpu_memory_mib",
                                                                        "problem_kinds", "notes")}
    (tmp_path / "old" / "ckpt").mkdir(parents=True)
    (tmp_path / "old" / "plan.json").write_text(json.dumps(old | {"model_dir": "ckpt", "from_the_future": 1}))
    monkeypatch.chdir(tmp_path)
    p = BuildPlan.load("old/plan.json")
    assert p.model_dir == str(tmp_path / "old" / "ckpt") and p.max_batch_size == old["max_batch_size"]
    assert (p.gpu_memory_mib, p.notes, p.problem_kinds, p.model_id) == (0, [], [], "")
    monkeypatch.chdir(tmp_path / "old")  # where the relative path was made: kept as it was
    assert BuildPlan.load("plan.json").model_dir == "ckpt"


def test_norm_quant_fusion_only_where_tensorrt_llm_keeps_it(tmp_path):
    """TensorRT-LLM 1.2's builder turns norm_quant_fusion off unless NVFP4 on LlamaForCausalLM without
    reduce_fusion: never planned for bf16 or fp8, and off in a plan saved when fp8 had it on."""
    from engine_build.plan import norm_quant_fusion_applies

    for dtype in ("bf16", "fp8"):
        for tp in (1, 2):
            assert not plan("h200", dtype, tp).norm_quant_fusion
    assert norm_quant_fusion_applies("nvfp4", False, "LlamaForCausalLM")
    assert not norm_quant_fusion_applies("nvfp4", True, "LlamaForCausalLM")
    assert not norm_quant_fusion_applies("nvfp4", False, "GPTForCausalLM")
    assert not norm_quant_fusion_applies("fp8", False, "LlamaForCausalLM")
    old = asdict(plan("h200", "fp8")) | {"norm_quant_fusion": True}
    (tmp_path / "plan.json").write_text(json.dumps(old))
    assert not BuildPlan.load(tmp_path / "plan.json").norm_quant_fusion


# --- the CLI, offline -----------------------------------------------------------------------------------


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns where there is no terminal


def test_cli_plans_offline_without_a_checkpoint(tmp_path, capsys, wide):
    out = tmp_path / "plan.json"
    assert main(["plan", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "planned from the built-in Ziya2-13B-Chat shape" in text and f"saved {out}" in text
    p = json.loads(out.read_text())
    assert (p["model_dir"], p["model_id"], p["gpu"], p["gpu_memory_mib"]) == ("", DEFAULT_MODEL, "h100-80gb", 81559)
    assert p["max_batch_size"] == expected_batch("h100-80gb", "bf16", 1)[1] == 24 and p["fits"]
    assert main(["plan", "--gpu", "a10g-24gb", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 1
    assert "--gpu l40s" in capsys.readouterr().out


def test_cli_list_gpus(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--list-gpus"]) == 0
    text = capsys.readouterr().out
    for name, g in GPUS.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
        assert f"{g.memory_mib:,}" in line and g.smi_name in line and g.arch in line
    assert "--gpu-mem-gib" in text and not (tmp_path / "plan.json").exists()


def test_cli_gpu_mem_gib(tmp_path, capsys, wide):
    out, cache = tmp_path / "plan.json", str(tmp_path / "cache")
    assert main(["plan", "--gpu-mem-gib", "24", "--cache-dir", cache, "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "FP8 tensor cores assumed absent" in text and "--tp 2" in text
    p = json.loads(out.read_text())
    assert (p["gpu"], p["gpu_memory_mib"], p["fits"]) == ("custom-24gib", 24576, False)
    assert main(["plan", "--gpu-mem-gib", "24", "--tp", "2", "--cache-dir", cache, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["max_batch_size"] == expected_batch(24576, "bf16", 2)[1] == 8
    assert main(["plan", "--gpu", "rtx-4090", "--gpu-mem-gib", "24", "--gpu-fp8", "--dtype", "fp8",
                 "--tp", "2", "--cache-dir", cache, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["gpu"] == "rtx-4090"


def test_cli_missing_local_path(tmp_path, capsys):
    assert main(["plan", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "p.json")]) == 1
    assert "no such directory" in capsys.readouterr().err and not (tmp_path / "p.json").exists()
    other = ["plan", "--model", "Other/Model-7B", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "p.json")]
    assert main(other) == 1
    assert "no built-in shape" in capsys.readouterr().err


def test_cli_plan_then_build_from_another_directory(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_ckpt.parent)
    assert main(["plan", "--model", tiny_ckpt.name, "--gpu", "h200", "--out", str(tmp_path / "plan.json")]) == 0
    assert json.loads((tmp_path / "plan.json").read_text())["model_dir"] == str(tiny_ckpt.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["build", "--plan", str(tmp_path / "plan.json"), "--engine-dir", "eng", "--dry-run"]) == 0
    m = json.loads((tmp_path / "elsewhere" / "eng" / "ziya_manifest.json").read_text())
    assert m["tokenizer_dir"] == str(tiny_ckpt.resolve()) and m["source_files"]
