"""The statistics of ``ziya-trt eval``: pure functions on made-up or measured numbers, no I/O.

- Two engines on the same items (``paired``): the difference of accuracies with a paired bootstrap interval (items
  resampled with replacement, a fixed seed so the figures reproduce), and McNemar's discordant counts with the exact
  two-sided binomial p-value.
- How many items an interval needs (``half_width``, ``items_needed``): per item the difference is
  ``D = b - a`` in {-1, 0, 1}; with ``d = P(D != 0)`` (the discordance rate) and ``delta = E[D]``,
  ``Var(D) = d - delta**2``, so the 95% half-width of the mean difference over ``n`` items is
  ``1.96 * sqrt((d - delta**2) / n)`` and ``n = 1.96**2 * d / h**2`` items bound it by ``h`` (taking ``delta`` 0,
  the worst case). docs/eval.md works examples.
- Agreement (``summary``): mean, quantiles and maximum of a list of numbers (absolute log-probability differences).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Paired:
    n: int  # items both engines answered
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    seed: int
    a_only: int  # McNemar's discordant counts: right on A only,
    b_only: int  # right on B only
    mcnemar_p: float  # exact two-sided binomial test of a_only against b_only

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of ``mean(b) - mean(a)`` over items resampled with replacement (pairs kept)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // d.size)  # resamples per chunk: bounded memory for large sets
    for i in range(0, n_boot, step):
        k = min(step, n_boot - i)
        means[i:i + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def binom_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (McNemar's exact test)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    log_pmf = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    return min(1.0, 2.0 * sum(math.exp(v) for v in log_pmf))


def paired(a, b, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> Paired:
    """Engine A's and B's correctness on the same items (booleans, in one order)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired: {a.size} and {b.size} items; the same items are needed")
    n = int(a.size)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    lo, hi = bootstrap_diff(a, b, n_boot, seed, level)
    acc_a = float(a.mean()) if n else math.nan
    acc_b = float(b.mean()) if n else math.nan
    return Paired(n, acc_a, acc_b, acc_b - acc_a, lo, hi, level, n_boot, seed, a_only, b_only,
                  binom_two_sided_p(b_only, a_only + b_only))


def half_width(n: int, discordance: float, delta: float = 0.0, z: float = Z95) -> float:
    """The normal-approximation half-width of the paired difference's interval over ``n`` items."""
    return z * math.sqrt(max(discordance - delta * delta, 0.0) / n)


def items_needed(discordance: float, half: float, z: float = Z95) -> int:
    """Items for a half-width of at most ``half`` at discordance rate ``discordance`` (delta taken as 0)."""
    return math.ceil(z * z * discordance / (half * half))


def summary(values) -> dict:
    """count, mean, p50, p95, max of ``values`` (None for each figure of an empty list)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    return {"count": int(v.size), "mean": float(v.mean()), "p50": float(np.quantile(v, 0.5)),
            "p95": float(np.quantile(v, 0.95)), "max": float(v.max())}
