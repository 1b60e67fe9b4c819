"""Paired comparisons for the benchmark tables: how many pairs, the mean difference, how sure we are of it.

Two methods run on the same (model, dataset, trial) form a *pair*; the tables compare them through the differences
within pairs, which removes what the pair shares (the data, the pretrained weights, the seed). For those
differences this module gives the mean, a paired bootstrap confidence interval of the mean (percentile method:
resample the pairs with replacement, take the quantiles of the resampled means) and the two-sided Wilcoxon
signed-rank p-value (scipy's exact test for small samples). benchmarks/README.md explains how to read them.

Example:
    >>> c = compare([3.0, 5.0, 4.0, 6.0], [1.0, 2.0, 2.0, 3.0])
    >>> c.n, c.mean
    (4, 2.5)
    >>> c.low <= 2.5 <= c.high
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    """The paired differences ``a - b`` summarized.

    Attributes:
        n: number of pairs.
        mean: mean difference.
        low, high: the bootstrap confidence interval of the mean (None with fewer than two pairs: one pair has
            no spread to resample).
        p: two-sided Wilcoxon signed-rank p-value (None with fewer than two pairs; 1.0 when every difference is 0).
    """

    n: int
    mean: float
    low: float | None
    high: float | None
    p: float | None

    def cells(self, digits: int = 2) -> list[str]:
        """Table cells: mean, ``[low, high]`` and p (a dash where there is too little to say)."""

        def signed(value):  # + 0.0 turns a rounded -0.0 into 0.0, so a zero never prints as "-0.00"
            return f"{round(value, digits) + 0.0:+.{digits}f}"

        interval = "-" if self.low is None else f"[{signed(self.low)}, {signed(self.high)}]"
        return [signed(self.mean), interval, "-" if self.p is None else f"{self.p:.2g}"]


def differences(a: Iterable[float], b: Iterable[float]) -> np.ndarray:
    """``a - b`` element by element; a clear error for unequal lengths, no pairs or values that are not finite."""
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two sequences of the same length, got {a.shape} and {b.shape}")
    d = a - b
    if not len(d):
        raise ValueError("no pairs to compare")
    if not np.isfinite(d).all():
        raise ValueError(f"paired differences must be finite, got {d.tolist()}")
    return d


def bootstrap_interval(d, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0):
    """Percentile bootstrap interval of the mean of ``d``: ``resamples`` means of ``len(d)`` draws with
    replacement; the interval holds the central ``confidence`` of them. Seeded, so a table re-renders the same."""
    d = np.asarray(d, dtype=float)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def signed_rank_p(d) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` against a zero median; zero differences are dropped (the
    test's classic rule) and a sample of zeros alone gives 1.0 (no evidence of any difference)."""
    d = np.asarray(d, dtype=float)
    if not np.any(d):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def compare(a: Iterable[float], b: Iterable[float], resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
            seed: int = 0) -> Comparison:
    """Summarize the paired differences ``a[i] - b[i]``: count, mean, bootstrap interval, Wilcoxon p."""
    d = differences(a, b)
    if len(d) < 2:
        return Comparison(1, float(d[0]), None, None, None)
    low, high = bootstrap_interval(d, resamples, confidence, seed)
    return Comparison(len(d), float(d.mean()), low, high, signed_rank_p(d))
