"""The paired statistics of the benchmark tables (benchmarks/stats.py), on cases whose answer is known."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import stats  # noqa: E402


def test_the_bootstrap_interval_of_two_pairs_spans_both_ends():
    # the resampled means of (0, 1) are 0, 0.5 and 1 with probabilities 1/4, 1/2, 1/4: the central 95% holds 0 and 1
    assert stats.bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)


def test_the_bootstrap_interval_of_a_large_sample_matches_the_normal_interval():
    d = np.random.default_rng(7).normal(2.0, 3.0, size=400)
    low, high = stats.bootstrap_interval(d)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # 0.29 here
    assert low == pytest.approx(d.mean() - half, abs=0.04)
    assert high == pytest.approx(d.mean() + half, abs=0.04)


def test_a_constant_difference_has_no_spread():
    c = stats.compare([5.0, 6.0, 7.0], [4.0, 5.0, 6.0])
    assert (c.n, c.mean, c.low, c.high) == (3, 1.0, 1.0, 1.0)


def test_the_signed_rank_p_of_six_positive_differences_is_the_exact_one():
    # every sign positive: 1 of the 2**6 sign patterns, twice for a two-sided test
    assert stats.signed_rank_p([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == pytest.approx(2 / 64)
    assert stats.signed_rank_p([0.0, 0.0]) == 1.0


def test_one_pair_gives_its_difference_without_an_interval():
    c = stats.compare([3.0], [1.0])
    assert (c.n, c.mean, c.low, c.high, c.p) == (1, 2.0, None, None, None)
    assert c.cells() == ["+2.00", "-", "-"]


def test_a_zero_rounded_from_below_prints_as_plus_zero():
    assert stats.Comparison(2, -1e-17, -1.0, -1e-17, 1.0).cells() == ["+0.00", "[-1.00, +0.00]", "1"]


def test_the_interval_is_seeded():
    d = [0.3, -1.2, 2.5, 0.7, 1.1]
    assert stats.bootstrap_interval(d, seed=3) == stats.bootstrap_interval(d, seed=3)


@pytest.mark.parametrize(("a", "b", "message"), [([1.0, 2.0], [1.0], "same length"), ([], [], "no pairs"),
                                                 ([float("nan")], [1.0], "finite")])
def test_bad_pairs_are_refused_with_the_reason(a, b, message):
    with pytest.raises(ValueError, match=message):
        stats.compare(a, b)
