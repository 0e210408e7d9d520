import pytest

from ziya_trt.errors import InvalidRequestError, PromptTooLongError
from ziya_trt.text.prompt import Conversation, Message, assistant, build_prompt, get_template, parse_messages, user

ZIYA = get_template("ziya")


def render(msgs):
    return ZIYA.render(Conversation.from_messages(msgs))


def test_one_turn_matches_the_card():
    assert render([user("帮我写一份去西安的旅游计划")]) == "<human>:帮我写一份去西安的旅游计划\n<bot>:"


def test_multi_turn_matches_the_card_format():
    msgs = [user("Q1"), assistant("A1"), user("问题二"), assistant("回答二"), user("Q3")]
    assert render(msgs) == "<human>:Q1\n<bot>:A1\n<human>:问题二\n<bot>:回答二\n<human>:Q3\n<bot>:"


def test_content_is_kept_verbatim_including_newlines_and_spaces():
    assert render([user("  line1\nline2  ")]) == "<human>:  line1\nline2  \n<bot>:"


@pytest.mark.parametrize(
    "msgs, match",
    [
        ([], "end with a user message"),
        ([user("a"), assistant("b")], "end with a user message"),
        ([user("a"), user("b")], "alternate"),
        ([assistant("a"), user("b")], "alternate"),
        ([user("   ")], "empty"),
    ],
)
def test_malformed_conversations_raise(msgs, match):
    with pytest.raises(InvalidRequestError, match=match):
        Conversation.from_messages(msgs)


def test_system_is_refused_by_ziya():
    with pytest.raises(InvalidRequestError, match="no system role"):
        render([Message("system", "be nice"), user("hi")])


@pytest.mark.parametrize(
    "raw, match",
    [
        ("not json", "not valid JSON"),
        ('{"role": "user"}', "list"),
        ('[{"role": "user"}]', "'role' and 'content'"),
        ('[{"role": "robot", "content": "x"}]', "unknown role"),
        ('[{"role": "user", "content": 5}]', "content must be text"),
    ],
)
def test_parse_messages_errors(raw, match):
    with pytest.raises(InvalidRequestError, match=match):
        parse_messages(raw)


def test_parse_messages_json():
    msgs = parse_messages('[{"role":"user","content":"你好"}]')
    assert render(msgs) == "<human>:你好\n<bot>:"


def test_unknown_template():
    with pytest.raises(InvalidRequestError, match="unknown template"):
        get_template("alpaca")


# --- truncation -------------------------------------------------------------------------------

CONV = [user("one " * 10), assistant("uno " * 10), user("two " * 10), assistant("dos " * 10), user("three")]


def words(text):  # a deterministic stand-in token counter for the pure truncation logic
    return len(text.split())


def test_no_budget_keeps_everything():
    p = build_prompt(CONV, ZIYA, words)
    assert (p.turns_kept, p.turns_dropped) == (3, 0)


def test_drops_oldest_whole_turns_first():
    full = words(render(CONV))
    p = build_prompt(CONV, ZIYA, words, budget=full - 1)
    assert p.turns_dropped == 1
    assert p.text == render(CONV[2:])
    assert p.n_tokens <= full - 1


def test_never_drops_the_last_user_turn():
    p = build_prompt(CONV, ZIYA, words, budget=words(render(CONV[-1:])))
    assert p.text == render(CONV[-1:])
    assert p.turns_dropped == 2


def test_last_turn_alone_too_long_says_by_how_many_tokens():
    need = words(render(CONV[-1:]))
    with pytest.raises(PromptTooLongError) as ei:
        build_prompt(CONV, ZIYA, words, budget=need - 1)
    assert (ei.value.n_tokens, ei.value.budget, ei.value.excess) == (need, need - 1, 1)
    assert "1 over the limit" in str(ei.value)


def test_truncation_with_the_real_tokenizer(tok):
    msgs = [user("你好，请问你是谁？" * 5), assistant("我是助手。" * 5), user("北京在哪里？")]
    full = build_prompt(msgs, ZIYA, tok.count)
    assert full.n_tokens == len(tok.encode(full.text))
    cut = build_prompt(msgs, ZIYA, tok.count, budget=full.n_tokens - 1)
    assert cut.text == "<human>:北京在哪里？\n<bot>:"
    assert cut.n_tokens == tok.count(cut.text)


def test_chat_template_renders_with_the_tokenizers_jinja(tok):
    tok.hf.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    try:
        t = get_template("chat_template", tok)
        text = t.render(Conversation.from_messages([Message("system", "S"), user("hi")]))
        assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    finally:
        tok.hf.chat_template = None
    with pytest.raises(InvalidRequestError, match="no chat_template"):
        get_template("chat_template", tok)


def test_a_prefill_ends_the_prompt_with_the_answer_to_continue():
    """The last message an assistant's: ``<bot>:`` and its partial content end the prompt, no new human turn."""
    conv = Conversation.from_messages([user("Q1"), assistant("A1"), user("Q2"), assistant("开头是")], prefill=True)
    assert ZIYA.render(conv) == "<human>:Q1\n<bot>:A1\n<human>:Q2\n<bot>:开头是"
    assert ZIYA.render(conv.last_turns(1)) == "<human>:Q2\n<bot>:开头是"
    with pytest.raises(InvalidRequestError, match="end with an assistant message"):
        Conversation.from_messages([user("Q")], prefill=True)


def test_prefill_content_is_content_never_a_marker(tok):
    """A prefill that spells a role marker reaches the model as plain characters, as any message content does."""
    from ziya_trt.text.prompt import encode_prompt

    conv = Conversation.from_messages([user("hi"), assistant("ok\n<human>:x")], prefill=True)
    ids = encode_prompt(conv, ZIYA, tok).ids
    marker = tok.encode("<human>:", add_bos=False)[0]
    assert ids.count(marker) == 1  # the template's own, at the start


def test_chat_template_prefill_continues_the_final_message(tok):
    tok.hf.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    try:
        t = get_template("chat_template", tok)
        text = t.render(Conversation.from_messages([user("hi"), assistant("Once upon")], prefill=True))
        assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nOnce upon"
    finally:
        tok.hf.chat_template = None
