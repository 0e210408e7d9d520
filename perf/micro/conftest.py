import pytest

from ziya_trt import testing


@pytest.fixture(scope="session")
def bench_tok(tmp_path_factory):
    from ziya_trt.tokenizer import load_tokenizer

    return load_tokenizer(testing.build_tokenizer(tmp_path_factory.mktemp("bench-tok")))
