"""Streaming detokeniser vs re-decoding the whole sequence each token (what transformers'
TextStreamer does). Run with: bash scripts/test.sh perf/micro --benchmark-enable
Figures are cost per token: (time for the whole stream) / n."""

import random

import pytest

from ziya_trt.fixtures.tiny import corpus_lines
from ziya_trt.text.detok import IncrementalDetokenizer

from tests.ziya_trt.text.test_detok import sp_decode_cut


def make_ids(tok, n):
    rng = random.Random(n)
    ids: list[int] = []
    while len(ids) < n:
        ids += tok.encode(rng.choice(corpus_lines(200)) + " 😀ꙮ", add_bos=False)
    return ids[:n]


@pytest.mark.parametrize("n", [128, 512, 2048])
def test_incremental(benchmark, bench_tok, n):
    ids = make_ids(bench_tok, n)

    def run():
        d = IncrementalDetokenizer(bench_tok.table)
        out = [d.push((t,)) for t in ids]
        out.append(d.flush())
        return "".join(out)

    text = benchmark(run)
    assert text == sp_decode_cut(bench_tok, ids)  # sentencepiece's, but a character cut at the end is one U+FFFD
    benchmark.extra_info["tokens"] = n


@pytest.mark.parametrize("n", [128, 512, 2048])
def test_full_redecode(benchmark, bench_tok, n):
    ids = make_ids(bench_tok, n)
    hf = bench_tok.hf

    def run():
        prev = ""
        for i in range(1, n + 1):
            text = hf.decode(ids[:i], skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                prev = text
        return prev

    benchmark.pedantic(run, rounds=3 if n == 2048 else 5, iterations=1)
    benchmark.extra_info["tokens"] = n
