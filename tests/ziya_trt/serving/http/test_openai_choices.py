"""Several choices (``n``), several prompts, token-id prompts and a chat prefill, on the OpenAI API of real
tritonservers, driven by the official ``openai`` package: choices indexed (prompt-major for several prompts), streamed
interleaved with each choice's own finish_reason, usage counting each prompt once and every choice's tokens."""

import openai
import pytest

from tests.ziya_trt.serving.http.test_openai_api import client, echo, post

pytestmark = pytest.mark.server

CHAT = [{"role": "user", "content": "写一首关于春天的诗 spring"}]
CHAT_IDS = "<human>:写一首关于春天的诗 spring\n<bot>:"


def test_n_choices_whole_each_indexed_with_usage_summed(syn_server, tok):
    r = client(syn_server).chat.completions.create(model="ziya", messages=CHAT, max_tokens=12, n=3)
    ids = tok.encode(CHAT_IDS)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == echo(tok, ids, 12) and c.finish_reason == "length" for c in r.choices)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), 3 * 12)


def test_n_choices_streamed_interleave_by_index_each_with_its_finish_reason(syn_server, tok):
    c = client(syn_server)
    chunks = list(c.chat.completions.create(model="ziya", messages=CHAT, max_tokens=12, n=3, stream=True,
                                            stream_options={"include_usage": True, "continuous_usage_stats": True}))
    ids = tok.encode(CHAT_IDS)
    texts: dict[int, str] = {}
    reasons: dict[int, list] = {}
    for ch in chunks[:-1]:
        for choice in ch.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason is not None:
                reasons.setdefault(choice.index, []).append(choice.finish_reason)
    assert texts == {i: echo(tok, ids, 12) for i in range(3)}
    assert reasons == {0: ["length"], 1: ["length"], 2: ["length"]}
    order = [ch.choices[0].index for ch in chunks[:-1] if ch.choices and ch.choices[0].delta.content]
    # the sequences run side by side (each its own slot, admitted together): their chunks interleave
    assert order != sorted(order), order
    roles = [ch.choices[0].index for ch in chunks if ch.choices and ch.choices[0].delta.role == "assistant"]
    assert sorted(roles) == [0, 1, 2]  # each choice's role chunk
    last = chunks[-1]
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens) == (len(ids), 36)
    so_far = [ch.usage.completion_tokens for ch in chunks[:-1] if ch.usage is not None]
    assert so_far == sorted(so_far) and so_far[-1] == 36  # continuous usage: over every choice, never backwards


def test_each_choice_stops_at_its_own_stop_string(syn_server, tok):
    """A stop string ends each choice's text; the engine request is stopped once all are complete."""
    r = client(syn_server).completions.create(model="ziya", prompt="one two three four five", max_tokens=40, n=2,
                                              stop=["four"])
    assert [c.finish_reason for c in r.choices] == ["stop", "stop"]
    assert all("four" not in c.text and c.text for c in r.choices)


def test_greedy_n2_gives_identical_choices_and_seeded_sampling_is_reproducible(ref_server):
    c = client(ref_server)
    msgs = [{"role": "user", "content": "Tell me a story"}]
    greedy = c.chat.completions.create(model="ziya", messages=msgs, max_tokens=16, n=2, temperature=0)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    kw = dict(model="ziya", messages=msgs, max_tokens=16, n=2, temperature=1.0, top_p=1.0, seed=1234)
    first, again = c.chat.completions.create(**kw), c.chat.completions.create(**kw)
    texts = [ch.message.content for ch in first.choices]
    assert texts == [ch.message.content for ch in again.choices]
    assert texts[0] != texts[1]  # sequence i draws with seed + i (this seed's two texts differ)


def test_n_with_logprobs_gives_each_choice_its_own(ref_server):
    r = client(ref_server).chat.completions.create(model="ziya", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=8, n=2, temperature=1.0, seed=7, logprobs=True)
    for ch in r.choices:
        raw = b"".join(bytes(t.bytes) for t in ch.logprobs.content)
        assert raw.decode("utf-8", "replace") == ch.message.content
        assert all(t.logprob <= 0 for t in ch.logprobs.content)
    assert sum(len(ch.logprobs.content) for ch in r.choices) == r.usage.completion_tokens


def test_a_list_of_prompts_gives_choices_prompt_major(syn_server, tok):
    prompts = ["alpha beta gamma", "delta epsilon"]
    r = client(syn_server).completions.create(model="ziya", prompt=prompts, max_tokens=6, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    want = [echo(tok, tok.encode(p), 6) for p in prompts]
    assert [c.text for c in r.choices] == [want[0], want[0], want[1], want[1]]
    assert r.usage.prompt_tokens == sum(len(tok.encode(p)) for p in prompts)
    assert r.usage.completion_tokens == 4 * 6
    streamed: dict[int, str] = {}
    for ch in client(syn_server).completions.create(model="ziya", prompt=prompts, max_tokens=6, n=2, stream=True):
        for choice in ch.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert streamed == {i: c.text for i, c in enumerate(r.choices)}


def test_token_id_prompts_go_to_the_engine_as_given(syn_server, tok):
    ids = tok.encode("the quick brown fox")
    c = client(syn_server)
    r = c.completions.create(model="ziya", prompt=ids, max_tokens=5)
    assert r.choices[0].text == echo(tok, ids, 5) and r.usage.prompt_tokens == len(ids)
    both = c.completions.create(model="ziya", prompt=[ids, ids[:3]], max_tokens=4)
    assert [ch.text for ch in both.choices] == [echo(tok, ids, 4), echo(tok, ids[:3], 4)]
    echoed = c.completions.create(model="ziya", prompt=ids, max_tokens=3, echo=True)
    assert echoed.choices[0].text == tok.decode(ids) + echo(tok, ids, 3)


@pytest.mark.parametrize("prompt, match", [
    ([10**6], "outside the vocabulary"),
    ([[1, 2], [10**6]], "outside the vocabulary"),
    ([], "expected a string"),
    ([[]], "expected a string"),
    (["ok", [5]], "expected a string"),
    ([-3], "expected a string"),
])
def test_bad_prompts_are_400_naming_prompt(syn_server, prompt, match):
    status, err = post(syn_server, "/v1/completions", {"model": "ziya", "prompt": prompt, "max_tokens": 2})
    assert status == 400, err
    assert err["error"]["param"] == "prompt" and match in err["error"]["message"]


def test_more_sequences_than_the_server_admits_are_refused_by_name(slow_server):
    """2 slots + 1 queued: two prompts of n=2 are 4 sequences; n=3 is over the 2 slots."""
    status, err = post(slow_server, "/v1/completions", {"model": "ziya", "prompt": ["a", "b"], "n": 2, "max_tokens": 2})
    assert status == 400 and err["error"]["param"] == "prompt", err
    with pytest.raises(openai.BadRequestError) as ei:
        client(slow_server).completions.create(model="ziya", prompt="a", n=3, max_tokens=2)
    assert ei.value.body["param"] == "n" and "max_batch_size 2" in ei.value.body["message"]


def test_a_prefill_is_continued_and_only_the_new_text_returned(syn_server, tok):
    """The last message the assistant's: the prompt ends with ``<bot>:`` and it (no new human turn); the
    synthetic engine replays exactly that prompt's ids, so the text shows what the engine was sent."""
    msgs = CHAT + [{"role": "assistant", "content": "春风"}]
    ids = tok.encode(CHAT_IDS + "春风")
    c = client(syn_server)
    r = c.chat.completions.create(model="ziya", messages=msgs, max_tokens=8)
    assert r.choices[0].message.content == echo(tok, ids, 8) and r.usage.prompt_tokens == len(ids)
    same = c.chat.completions.create(model="ziya", messages=msgs, max_tokens=8,
                                     extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert same.choices[0].message.content == r.choices[0].message.content
    status, err = post(syn_server, "/v1/chat/completions", {"model": "ziya", "messages": CHAT, "max_tokens": 2,
                                                            "continue_final_message": True})
    assert status == 400 and err["error"]["param"] == "continue_final_message", err
    status, err = post(syn_server, "/v1/chat/completions", {"model": "ziya", "messages": msgs, "max_tokens": 2,
                                                            "add_generation_prompt": True})
    assert status == 400 and err["error"]["param"] == "add_generation_prompt", err  # a new answer: not honoured



def test_n_through_the_rendered_tensorrt_llm_model(stock_server, tok):
    """The stand-in loaded from the rendered ``tensorrt_llm`` config (its name, its 62 inputs and 21 outputs) takes
    num_return_sequences and answers with sequence_index, as the contract says the backend does."""
    r = client(stock_server).completions.create(model="ensemble", prompt="alpha beta", max_tokens=4, n=3)
    want = echo(tok, tok.encode("alpha beta"), 4)
    assert [(c.index, c.text) for c in r.choices] == [(0, want), (1, want), (2, want)]


def test_closing_a_stream_of_two_choices_frees_both_slots(slow_server):
    from tests.triton_helpers import wait_metric
    from ziya_trt.serving.triton.gauges import METRIC_ACTIVE

    with client(slow_server).chat.completions.create(model="ziya", messages=[{"role": "user", "content": "go"}],
                                                     max_tokens=1000, n=2, stream=True) as s:
        for _ in zip(range(4), s):
            pass
        v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 2)
        assert v == 2  # each choice holds a slot
    v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0)
    assert v == 0, "the closed stream kept generating"


def test_the_triton_front_door_takes_num_return_sequences_too(syn_server, tok):
    """``ziya`` over gRPC, as tensorrt_llm_bls takes it: each response one sequence's, with sequence_index."""
    from tests.triton_helpers import grpc_stream

    results, err = grpc_stream(syn_server.grpc_url, "ziya", {"text_input": "alpha beta gamma", "max_tokens": 5,
                                                             "stream": True, "num_return_sequences": 2})
    assert err is None, err
    texts: dict[int, str] = {}
    for res in results:
        t, i = res.as_numpy("text_output"), res.as_numpy("sequence_index")
        if t is not None:
            texts[int(i[0])] = texts.get(int(i[0]), "") + "".join(x.decode() for x in t)
    want = echo(tok, tok.encode("alpha beta gamma"), 5)
    assert texts == {0: want, 1: want}
