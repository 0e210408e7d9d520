"""Log probabilities on the OpenAI API against real tritonservers, with the official ``openai`` client: the reference
engine's greedy ones are transformers' (the tiny Ziya-shaped model in float32), streamed and whole give the same,
only the sampled token's is served (``top_logprobs`` > 0 is a 400 naming it), and the synthetic replay's are 0.0."""

import openai
import pytest
import torch

from ziya_trt.serving.http.openai.logprobs import token_string

pytestmark = pytest.mark.server

# float32 on both sides (the reference engine in tritonserver, transformers here), summed in different orders:
# in-process they differ by at most 4.8e-7 (tests/ziya_trt/engine/test_log_probs.py); the wire carries FP32 as is
TOL = 1e-5
# greedy with no penalty: the log probabilities are the model's own (the card's repetition penalty would change them)
PLAIN = {"repetition_penalty": 1.0}


def client(srv):
    return openai.OpenAI(base_url=srv.openai_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def hf_model(tiny_ckpt):
    from ziya_trt.engine.reference import load_model

    return load_model(tiny_ckpt, "float32")


def greedy_with_log_probs(model, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """transformers' greedy tokens and each one's log-softmax over the whole vocabulary (float32)."""
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, output_logits=True,
                         return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    return tokens, [float(torch.log_softmax(lg[0].float(), -1)[t]) for lg, t in zip(out.logits, tokens)]


def expect_prefix(tok, entries_tokens, entries_lps, hf_tokens, hf_lps):
    """The served tokens are the first of transformers' (a stop string of the template may end the text early)."""
    k = len(entries_tokens)
    assert k >= 1
    assert entries_tokens == [token_string(tok.table.token_bytes(t)) for t in hf_tokens[:k]]
    assert entries_lps == pytest.approx(hf_lps[:k], abs=TOL)


def test_chat_greedy_logprobs_are_transformers_whole_and_streamed(ref_server, hf_model, tok):
    c, msgs = client(ref_server), [{"role": "user", "content": "北京在哪里？ Tell me."}]
    whole = c.chat.completions.create(model="ziya", messages=msgs, max_tokens=12, temperature=0, logprobs=True,
                                      top_logprobs=0, extra_body=PLAIN)
    content = whole.choices[0].logprobs.content
    assert whole.choices[0].logprobs.refusal is None
    assert all(e.top_logprobs == [] for e in content)
    ids = tok.encode("<human>:北京在哪里？ Tell me.\n<bot>:")
    hf_tokens, hf_lps = greedy_with_log_probs(hf_model, ids, 12)
    expect_prefix(tok, [e.token for e in content], [e.logprob for e in content], hf_tokens, hf_lps)
    assert [e.bytes for e in content] == [list(tok.table.token_bytes(t)) for t in hf_tokens[: len(content)]]
    if whole.choices[0].finish_reason == "length":
        assert len(content) == whole.usage.completion_tokens == 12
    streamed = []
    for chunk in c.chat.completions.create(model="ziya", messages=msgs, max_tokens=12, temperature=0, logprobs=True,
                                           stream=True, extra_body=PLAIN):
        lp = chunk.choices[0].logprobs
        if lp is not None:
            streamed += lp.content
    assert [(e.token, e.logprob, e.bytes) for e in streamed] == [(e.token, e.logprob, e.bytes) for e in content]


def test_completions_logprobs_0_are_transformers_whole_and_streamed(ref_server, hf_model, tok):
    c, prompt = client(ref_server), "The capital of China is"
    whole = c.completions.create(model="ziya", prompt=prompt, max_tokens=10, temperature=0, logprobs=0,
                                 extra_body=PLAIN)
    lp = whole.choices[0].logprobs
    assert lp.top_logprobs is None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:k]) for k in range(len(lp.tokens))]
    hf_tokens, hf_lps = greedy_with_log_probs(hf_model, tok.encode_protected(prompt, [(0, len(prompt))]), 10)
    expect_prefix(tok, lp.tokens, lp.token_logprobs, hf_tokens, hf_lps)
    tokens, lps, offsets = [], [], []
    for chunk in c.completions.create(model="ziya", prompt=prompt, max_tokens=10, temperature=0, logprobs=0,
                                      stream=True, extra_body=PLAIN):
        if chunk.choices[0].logprobs is not None:
            tokens += chunk.choices[0].logprobs.tokens
            lps += chunk.choices[0].logprobs.token_logprobs
            offsets += chunk.choices[0].logprobs.text_offset
    assert (tokens, lps, offsets) == (lp.tokens, lp.token_logprobs, lp.text_offset)


def test_without_logprobs_there_are_none(ref_server):
    r = client(ref_server).chat.completions.create(model="ziya", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=3, temperature=0)
    assert r.choices[0].logprobs is None


@pytest.mark.parametrize("api, kw, param", [
    ("chat", {"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
    ("chat", {"top_logprobs": 21}, "top_logprobs"),
    ("completions", {"logprobs": 2}, "logprobs"),
    ("completions", {"logprobs": 0, "echo": True}, "logprobs"),
])
def test_alternatives_are_a_400_naming_the_parameter_and_why(syn_server, api, kw, param):
    c = client(syn_server)
    with pytest.raises(openai.BadRequestError) as ei:
        if api == "chat":
            c.chat.completions.create(model="ziya", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **kw)
        else:
            c.completions.create(model="ziya", prompt="hi", max_tokens=2, **kw)
    err = ei.value.body
    assert ei.value.status_code == 400 and err["param"] == param
    if kw.get(param) == 2:
        assert "sampled token" in err["message"] and "TensorRT-LLM" in err["message"]


def test_the_synthetic_replay_is_certain(syn_server):
    c = client(syn_server)
    chunks = list(c.chat.completions.create(model="ziya", messages=[{"role": "user", "content": "alpha bravo"}],
                                            max_tokens=9, logprobs=True, stream=True,
                                            stream_options={"include_usage": True}))
    entries = [e for ch in chunks if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert len(entries) == chunks[-1].usage.completion_tokens == 9 and {e.logprob for e in entries} == {0.0}
