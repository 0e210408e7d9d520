"""TensorSpec builds every array: batch dimension, dtype, strings as UTF-8 bytes."""

import numpy as np

from ziya_trt.wire.tensors import ENGINE_INPUTS, FRONT_DOOR_INPUTS, FRONT_DOOR_OUTPUTS, NP_BY_WIRE


def test_scalars_sequences_and_strings_get_the_batch_dimension_and_the_dtype():
    assert ENGINE_INPUTS["input_lengths"].array(3).tolist() == [[3]]
    assert ENGINE_INPUTS["input_ids"].array([1, 2, 3]).shape == (1, 3)
    assert ENGINE_INPUTS["seed"].array(2**64 - 1).dtype == np.uint64
    assert FRONT_DOOR_INPUTS["text_input"].array("你好").tolist() == [["你好".encode()]]
    assert FRONT_DOOR_INPUTS["stop_words"].array(["a", "b"]).shape == (1, 2)
    a = np.zeros((1, 2, 3), dtype=np.int64)
    assert ENGINE_INPUTS["stop_words_list"].array(a).dtype == np.int32  # an array takes the declared dtype
    assert FRONT_DOOR_OUTPUTS["num_input_tokens"].vector(5).tolist() == [5]


def test_wire_datatypes_map_back_to_the_same_numpy_dtypes():
    for spec in list(ENGINE_INPUTS.values()) + list(FRONT_DOOR_INPUTS.values()):
        assert NP_BY_WIRE[spec.client_dtype] is spec.np_dtype
