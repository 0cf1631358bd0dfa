"""Paired-block statistics of an A/B run: the exact signed-rank distribution, the Hodges–Lehmann interval,
and why pairing matters when the machine drifts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from infership.bench.paired import (
    MIN_PAIRS,
    hodges_lehmann,
    paired_median_ratio,
    paired_percentile_ratio,
    signed_rank_cdf,
)
from infership.bench.stats import bootstrap_ratio
from infership.runtime.errors import InvalidInputError


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_signed_rank_distribution_is_exact(n: int) -> None:
    """Against enumeration of every sign pattern."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        counts[sum(r for r, s in zip(range(1, n + 1), signs, strict=True) if s)] += 1
    assert signed_rank_cdf(n) == pytest.approx(np.cumsum(counts) / 2**n)


def test_hodges_lehmann_matches_the_textbook_interval() -> None:
    """n = 10 at 95 %: the interval runs from the 9th smallest to the 9th largest of the 55 Walsh averages
    (two-sided critical value T = 8; Hollander & Wolfe, table A.4)."""
    d = np.array([0.3, -1.2, 2.5, 0.8, 1.1, -0.4, 1.9, 0.6, 3.2, 0.2])
    i, j = np.triu_indices(10)
    walsh = np.sort((d[i] + d[j]) / 2)
    est, lo, hi = hodges_lehmann(d)
    assert est == pytest.approx(np.median(walsh))
    assert (lo, hi) == (walsh[8], walsh[55 - 9])


def test_too_few_pairs_give_an_unbounded_interval_not_a_verdict() -> None:
    _, lo, hi = hodges_lehmann([0.1] * (MIN_PAIRS - 1))
    assert lo == -math.inf and hi == math.inf
    ratio = paired_median_ratio([[1.0, 1.1]] * 3, [[2.0, 2.1]] * 3)
    assert ratio.detectable == math.inf


def test_the_interval_covers_the_truth_at_its_level() -> None:
    """Symmetric noise around a true 7 % slowdown: the 95 % interval holds 1.07 about 95 times in 100."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        d = np.log(1.07) + rng.standard_t(4, size=20) * 0.03
        _, lo, hi = hodges_lehmann(d)
        hits += lo <= np.log(1.07) <= hi
    assert 180 <= hits <= 200


def _drifting_blocks(rng: np.random.Generator, *, pairs: int, slowdown: float) -> tuple[list, list]:
    """Blocks of 30 queries; the machine's speed wanders by ±25 % over the run (slowly: neighbours agree)."""
    level = 1 + 0.25 * np.sin(np.linspace(0, 3 * np.pi, 2 * pairs))
    a, b = [], []
    for i in range(pairs):
        a.append(level[2 * i] * rng.lognormal(0, 0.1, 30))
        b.append(level[2 * i + 1] * (1 + slowdown) * rng.lognormal(0, 0.1, 30))
    return a, b


def test_pairing_cancels_drift_that_an_unpaired_comparison_mistakes_for_noise_or_change() -> None:
    rng = np.random.default_rng(1)
    a, b = _drifting_blocks(rng, pairs=30, slowdown=0.0)
    paired = paired_median_ratio(a, b)
    assert paired.low < 1 < paired.high and paired.detectable < 0.03  # A/A: precise, and no change
    a, b = _drifting_blocks(rng, pairs=30, slowdown=0.08)
    paired = paired_median_ratio(a, b)
    assert paired.low > 1.04 and paired.estimate == pytest.approx(1.08, abs=0.02)
    # The same samples pooled per side: the drift swamps an 8 % slowdown.
    pooled = bootstrap_ratio(
        np.concatenate(a), np.concatenate(b), baseline_rounds=[30] * 30, current_rounds=[30] * 30
    )
    assert pooled.detectable > 3 * paired.detectable


def test_p99_ratio_resamples_pairs() -> None:
    rng = np.random.default_rng(2)
    a, b = _drifting_blocks(rng, pairs=40, slowdown=0.0)
    same = paired_percentile_ratio(a, b)
    assert same.statistic == "p99" and same.low < 1 < same.high
    b_tail = [x.copy() for x in b]
    for x in b_tail:
        x[::10] *= 3  # a tenth of the candidate's queries three times slower: the tail moves
    tail = paired_percentile_ratio(a, b_tail)
    assert tail.low > 1.5


def test_bad_blocks_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="same non-zero block count"):
        paired_median_ratio([[1.0]], [[1.0], [2.0]])
    with pytest.raises(InvalidInputError, match="holds no sample"):
        paired_median_ratio([[1.0], []], [[1.0], [2.0]])
    with pytest.raises(InvalidInputError, match="finite"):
        hodges_lehmann([0.1, float("nan")])
