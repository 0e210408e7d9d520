import math

import pytest

from ziya_trt.errors import InvalidRequestError
from ziya_trt.text.sampling import MAX_SEED, SamplingParams


def test_defaults_are_the_model_cards():
    p = SamplingParams()
    assert (p.max_new_tokens, p.top_p, p.temperature, p.repetition_penalty, p.do_sample) == (
        512, 0.9, 0.85, 1.05, True
    )
    assert not p.greedy
    assert SamplingParams(do_sample=False).greedy and SamplingParams(temperature=0.0).greedy


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": -5}, "max_new_tokens"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"stop": ("",)}, "stop"),
        ({"stop": ("x" * 1000,)}, "stop"),
        ({"stop": tuple(str(i) for i in range(100))}, "stop"),
        ({"min_tokens": -1}, "min_tokens"),
    ],
)
def test_out_of_range_values_raise_typed_errors_naming_the_field(kw, field):
    with pytest.raises(InvalidRequestError) as ei:
        SamplingParams(**kw)
    assert ei.value.field == field
    assert field in str(ei.value)


def test_edges_are_accepted():
    SamplingParams(temperature=0.0, top_p=1.0, top_k=0, seed=0, max_new_tokens=1)
    SamplingParams(seed=MAX_SEED)


def test_dict_round_trip_and_unknown_keys():
    p = SamplingParams(top_k=5, stop=("a", "b"), seed=7)
    assert SamplingParams.from_dict(p.to_dict()) == p
    with pytest.raises(InvalidRequestError, match="topp"):
        SamplingParams.from_dict({"topp": 0.5})


def test_temperatures_too_small_to_sample_with_are_refused_and_zero_is_greedy():
    with pytest.raises(InvalidRequestError, match="too small to sample with; use 0 for greedy"):
        SamplingParams(temperature=1e-40)
    assert SamplingParams(temperature=0.0).greedy and SamplingParams(temperature=1e-5).temperature == 1e-5
