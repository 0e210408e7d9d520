import pytest

from ziya_trt.fixtures import tiny


@pytest.fixture(scope="session")
def bench_tok(tmp_path_factory):
    from ziya_trt.text.tokenizer import load_tokenizer

    return load_tokenizer(tiny.build_tokenizer(tmp_path_factory.mktemp("bench-tok")))
