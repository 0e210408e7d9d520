from ziya_trt.finish import FinishReason, reason_at_end


def test_the_end_of_an_engine_stream_has_one_rule():
    assert reason_at_end(True, 64, 64) is FinishReason.CANCELLED  # a cancel wins over the length
    assert reason_at_end(False, 64, 64) is FinishReason.LENGTH
    assert reason_at_end(False, 10, 64) is FinishReason.EOS  # the engine stopped on its own
    assert reason_at_end(False, 10, None) is FinishReason.EOS
