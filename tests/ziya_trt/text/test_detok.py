"""Property tests: streaming in random chunks equals sentencepiece's full decode, never leaks
broken characters or stop strings."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ziya_trt.finish import FinishReason

from ziya_trt.text.detok import IncrementalDetokenizer, StopMatcher, TextStream, _is_valid_prefix, _utf8_len, decode_bytes_per_byte

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def chunked(ids, sizes):
    i, k = 0, 0
    while i < len(ids):
        n = sizes[k % len(sizes)] if sizes else 1
        yield ids[i : i + n]
        i, k = i + n, k + 1


def sp_decode_cut(tok, ids):
    """sentencepiece's decode, except that a character the sequence cuts short at its end is one U+FFFD (sentencepiece
    gives one per byte; Python's decoder and the Unicode recommendation one per character)."""
    full = tok.sp.decode(ids)
    tail = b""
    for t in reversed(ids):
        if tok.table.raw[t] is None:
            break
        tail = tok.table.raw[t] + tail
    for k in (3, 2, 1):  # the last lead byte, if what follows it is short of its character (and still could be it)
        cut = tail[-k:]
        if len(cut) == k and k < _utf8_len(cut[0]) and _is_valid_prefix(cut) and full.endswith("\ufffd" * k):
            return full[:-k] + cut.decode("utf-8", "replace")
    return full


def stream(table, ids, sizes):
    d = IncrementalDetokenizer(table)
    pieces = [d.push(c) for c in chunked(ids, sizes)]
    pieces.append(d.flush())
    return pieces


sizes_st = st.lists(st.integers(1, 7), min_size=1, max_size=8)
text_st = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("你好世界春风拂面的是一 abcdefg\n\t,.!?:<>")),
        st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)),
    ),
    max_size=40,
)


@SETTINGS
@given(data=st.data(), sizes=sizes_st)
def test_random_ids_stream_equals_sentencepiece_decode(tok, data, sizes):
    # any ids at all, including lone/invalid byte pieces, unk, bos/eos and the chat tokens
    n = tok.vocab_size
    byte_ids = [i for i in range(n) if tok.table.raw[i] is not None]
    ids = data.draw(st.lists(st.one_of(st.integers(0, n - 1), st.sampled_from(byte_ids)), max_size=60))
    full = sp_decode_cut(tok, ids)
    pieces = stream(tok.table, ids, sizes)
    assert "".join(pieces) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in p for p in pieces)


@SETTINGS
@given(text=text_st, sizes=sizes_st)
def test_text_round_trips_and_no_piece_has_a_broken_character(tok, text, sizes):
    ids = tok.encode(text, add_bos=True)
    pieces = stream(tok.table, ids, sizes)
    assert "".join(pieces) == tok.sp.decode(ids)
    if "\ufffd" not in text:
        assert not any("\ufffd" in p for p in pieces)


def test_leading_space_rule_matches_sentencepiece(tok):
    sp, B = tok.sp, lambda b: tok.sp.piece_to_id("<0x%02X>" % b)
    space = sp.piece_to_id("\u2581")
    for ids in ([space], [space, space], [B(0x20), space], [1, space, 3], [B(0xE4), space], [0, space],
                [B(0xC2), 1, B(0x80)]):  # a control token in the middle of a byte run ends the run
        assert "".join(stream(tok.table, ids, [1])) == sp.decode(ids), ids


def test_incomplete_character_is_held_then_released(tok):
    B = lambda b: tok.sp.piece_to_id("<0x%02X>" % b)
    d = IncrementalDetokenizer(tok.table)
    assert d.push([B(0xE4)]) == "" and d.push([B(0xBD)]) == ""
    assert d.push([B(0xA0)]) == "你"
    assert d.push([B(0xF0), B(0x9F)]) == ""
    assert d.flush() == "\ufffd"  # an emoji cut short by the end of the reply: one replacement, not one per byte
    d = IncrementalDetokenizer(tok.table)  # in the middle of a sequence, sentencepiece's one per invalid byte
    assert d.push([B(0xF0), B(0x9F), tok.sp.piece_to_id("\u2581")]) == "\ufffd\ufffd "


def test_out_of_vocab_id_is_an_error(tok):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        IncrementalDetokenizer(tok.table).push([tok.vocab_size])


@pytest.mark.parametrize(
    "buf, final, text, rest",
    [
        (b"\xe4\xbd", False, "", b"\xe4\xbd"),
        (b"\xe4\xbd", True, "\ufffd\ufffd", b""),
        (b"a\xf0\x9f\x98", True, "a\ufffd\ufffd\ufffd", b""),
        (b"\xed\xa0\x80", False, "\ufffd\ufffd\ufffd", b""),  # surrogate: never valid
        (b"\xc0\x80", False, "\ufffd\ufffd", b""),  # overlong
        (b"a\xf0\x9f\x98\x80b", False, "a\U0001F600b", b""),
    ],
)
def test_per_byte_decoder(buf, final, text, rest):
    assert decode_bytes_per_byte(buf, final) == (text, rest)


@pytest.mark.parametrize("buf, text", [(b"a\xf0\x9f\x98", "a\ufffd"), (b"\xe4\xbd", "\ufffd"), (b"\xe4", "\ufffd"),
                                       (b"\xff\xe4\xbd", "\ufffd\ufffd"), (b"\xed\xa0", "\ufffd\ufffd")])
def test_a_character_cut_short_at_the_end_is_one_replacement(buf, text):
    assert decode_bytes_per_byte(buf, True, at_end=True) == (text, b"")


# --- stopping ---------------------------------------------------------------------------------


@SETTINGS
@given(
    before=text_st,
    after=text_st,
    stop=st.sampled_from(["<human>:", "###", "停止", "\n\n", "x"]),
    sizes=sizes_st,
)
def test_stop_strings_split_across_chunks_never_leak(tok, before, after, stop, sizes):
    ids = tok.encode(before + stop + after, add_bos=False)
    full = tok.sp.decode(ids)
    s = TextStream(tok.table, stops=[stop])
    out = []
    for c in chunked(ids, sizes):
        step = s.push(c)
        out.append(step.text)
        if step.finish_reason:
            break
    else:
        out.append(s.finish(FinishReason.EOS).text)
    cut = full.find(stop)
    if cut == -1:  # tokenisation merged the stop string with a neighbour into other text
        assert "".join(out) == full
    else:
        assert "".join(out) == full[:cut]
        assert s.finish_reason is FinishReason.STOP and s.stop_string == stop


def test_stop_matcher_holds_only_a_possible_prefix():
    m = StopMatcher(["<human>:"])
    assert m.push("hello <") == ("hello ", None)
    assert m.push("b") == ("<b", None)
    assert m.push("x <hum") == ("x ", None)
    assert m.push("an>: more") == ("", "<human>:")
    m2 = StopMatcher(["ab", "b"])
    assert m2.push("xab") == ("x", "ab")  # earliest match wins


def test_eos_and_length_finish_reasons(tok):
    ids = tok.encode("你好 world", add_bos=False)
    s = TextStream(tok.table, eos_ids=[tok.eos_id])
    step = s.push(ids + [tok.eos_id] + ids)
    assert (step.text, step.finish_reason) == ("你好 world", FinishReason.EOS)
    s = TextStream(tok.table, max_new_tokens=2)
    assert s.push(ids).finish_reason is FinishReason.LENGTH and s.n_generated == 2
    assert s.push(ids).text == ""  # finished streams stay finished


def test_finish_releases_held_text(tok):
    s = TextStream(tok.table, stops=["<human>:"])
    assert s.push(tok.encode("ok <hu", add_bos=False)).text == "ok "
    step = s.finish(FinishReason.CANCELLED)
    assert (step.text, step.finish_reason) == ("<hu", FinishReason.CANCELLED)


def test_a_character_broken_by_another_lead_byte_is_one_replacement_per_byte_as_sentencepiece(tok):
    """F0 90 then C0: the character is broken in the middle, not cut short by the end (found by the property above)."""
    B = lambda b: tok.sp.piece_to_id("<0x%02X>" % b)  # noqa: E731
    ids = [B(0xF0), B(0x90), B(0xC0)]
    assert "".join(stream(tok.table, ids, [1, 1, 1])) == tok.sp.decode(ids) == "\ufffd" * 3 == sp_decode_cut(tok, ids)
