"""The statistics on made-up items: the paired bootstrap against the normal approximation, McNemar's counts and exact
p-value, the items-needed formula, and that a fixed seed reproduces the interval."""

import math

import numpy as np
import pytest

from ziya_trt.eval import stats


def made_up(n: int, a_only: int, b_only: int, both: int):
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:both] = b[:both] = True
    a[both:both + a_only] = True
    b[both + a_only:both + a_only + b_only] = True
    return a, b


def test_paired_counts_and_difference():
    a, b = made_up(200, a_only=12, b_only=4, both=100)
    p = stats.paired(a, b, n_boot=4000, seed=1)
    assert (p.n, p.a_only, p.b_only) == (200, 12, 4)
    assert p.acc_a == pytest.approx(112 / 200) and p.acc_b == pytest.approx(104 / 200)
    assert p.diff == pytest.approx(-8 / 200)
    assert p.ci_low < p.diff < p.ci_high


def test_bootstrap_interval_is_the_normal_one_for_many_items():
    a, b = made_up(2000, a_only=60, b_only=40, both=1200)  # discordance 0.05, delta -0.01
    lo, hi = stats.bootstrap_diff(a, b, n_boot=20_000, seed=0)
    half = stats.half_width(2000, 0.05, -0.01)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.05)
    assert (lo + hi) / 2 == pytest.approx(-0.01, abs=0.001)


def test_the_seed_reproduces_the_interval_and_another_seed_moves_it():
    a, b = made_up(300, 20, 9, 150)
    assert stats.bootstrap_diff(a, b, 2000, seed=7) == stats.bootstrap_diff(a, b, 2000, seed=7)
    assert stats.bootstrap_diff(a, b, 2000, seed=7) != stats.bootstrap_diff(a, b, 2000, seed=8)


def test_identical_engines_have_a_zero_width_interval():
    a, _ = made_up(50, 0, 0, 30)
    p = stats.paired(a, a.copy())
    assert (p.diff, p.ci_low, p.ci_high, p.mcnemar_p) == (0.0, 0.0, 0.0, 1.0)


def test_mcnemar_exact_p_values():
    assert stats.binom_two_sided_p(0, 0) == 1.0
    assert stats.binom_two_sided_p(0, 5) == pytest.approx(2 / 32)
    assert stats.binom_two_sided_p(1, 10) == pytest.approx(2 * 11 / 1024)
    assert stats.binom_two_sided_p(9, 10) == stats.binom_two_sided_p(1, 10)
    assert stats.binom_two_sided_p(5, 10) == 1.0


def test_items_needed_inverts_the_half_width():
    n = stats.items_needed(0.05, 0.01)
    assert n == math.ceil(1.959963984540054 ** 2 * 0.05 / 0.0001) == 1921
    assert stats.half_width(n, 0.05) <= 0.01 < stats.half_width(n - 20, 0.05)


def test_paired_refuses_different_item_counts():
    with pytest.raises(ValueError, match="same items"):
        stats.paired([True, False], [True])


def test_summary():
    s = stats.summary([1.0, 2.0, 3.0, 4.0])
    assert s == {"count": 4, "mean": 2.5, "p50": 2.5, "p95": pytest.approx(3.85), "max": 4.0}
    assert stats.summary([])["mean"] is None
