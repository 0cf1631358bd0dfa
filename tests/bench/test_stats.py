"""Statistics on known samples: percentiles, stability, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from infership.bench.stats import bootstrap_ratio, check_stability, summarize
from infership.runtime.errors import InvalidInputError

from tests.bench.conftest import lognormal


def test_summary_of_one_to_hundred_matches_hand_computed_percentiles() -> None:
    s = summarize(list(range(1, 101)))
    assert s.count == 100
    assert s.min == 1 and s.max == 100
    assert s.mean == pytest.approx(50.5)
    assert s.std == pytest.approx(29.011491975882016)  # sample std, ddof=1
    # linear interpolation: rank = q/100 * (n-1)
    assert (s.p50, s.p90, s.p95, s.p99) == pytest.approx((50.5, 90.1, 95.05, 99.01))


def test_summary_small_and_single_samples() -> None:
    assert summarize([4, 1, 3, 2]).p50 == pytest.approx(2.5)
    one = summarize([7.0])
    assert (one.p50, one.p99, one.std, one.count) == (7.0, 7.0, 0.0, 1)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_summary_rejects_empty_nan_and_2d(bad: list) -> None:
    with pytest.raises(InvalidInputError, match="latenc"):
        summarize(bad)


def test_summary_round_trips_through_dict() -> None:
    s = summarize([1.0, 2.0, 5.0])
    assert type(s).from_dict(s.to_dict()) == s


def _series(medians: list[float], per_window: int = 50) -> tuple[np.ndarray, np.ndarray]:
    lat = np.concatenate([np.full(per_window, m) for m in medians])
    end = np.concatenate([np.linspace(i + 1e-3, i + 1, per_window) for i in range(len(medians))])
    return lat, end


def test_stability_met_for_steady_windows() -> None:
    lat, end = _series([1.0, 1.02, 0.99, 1.01])
    st = check_stability(lat, end, window_s=1.0, windows=3, tolerance=0.1)
    assert st.met and st.reason == ""
    assert st.latency_spread == pytest.approx(0.0166, abs=1e-3)


def test_stability_not_met_when_the_last_window_shifts() -> None:
    lat, end = _series([1.0, 1.0, 1.0, 1.5])
    st = check_stability(lat, end, window_s=1.0, windows=3, tolerance=0.1)
    assert not st.met
    assert "window medians vary" in st.reason
    avg = 3.5 / 3
    assert st.latency_spread == pytest.approx((1.5 - avg) / avg)


def test_stability_not_met_with_too_little_data() -> None:
    lat, end = _series([1.0])
    st = check_stability(lat, end, window_s=1.0, windows=3)
    assert not st.met and "fewer than 3 windows" in st.reason
    assert not check_stability([], [], window_s=1.0).met


def test_bootstrap_same_distribution_interval_contains_one() -> None:
    a, b = lognormal(2000, seed=1), lognormal(2000, seed=2)
    for q in (50, 99):
        r = bootstrap_ratio(a, b, percentile=q, seed=0)
        assert r.low < 1 < r.high, r
        assert r.low < r.estimate < r.high


def test_bootstrap_detects_a_real_shift() -> None:
    a, b = lognormal(1000, seed=1), lognormal(1000, seed=2, scale=1.5)
    r = bootstrap_ratio(a, b, percentile=50, seed=0)
    assert r.estimate == pytest.approx(1.5, rel=0.05)
    assert r.low > 1.3 and r.high < 1.7
    assert r.statistic == "p50" and r.confidence == 0.95


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    a, b = lognormal(300, seed=1), lognormal(300, seed=2)
    assert bootstrap_ratio(a, b, seed=5) == bootstrap_ratio(a, b, seed=5)


def test_block_bootstrap_widens_the_interval_for_clustered_slow_queries() -> None:
    """A burst of slow queries in one stretch of the run is what a re-run might not see: resampling whole
    blocks shows that uncertainty; resampling single samples hides it."""
    base = lognormal(2000, seed=1)
    cur = lognormal(2000, seed=2)
    cur[1000:1060] *= 20  # one burst of interference, 3% of the run
    iid = bootstrap_ratio(base, cur, percentile=99, blocks=None, seed=0)
    blocked = bootstrap_ratio(base, cur, percentile=99, seed=0)
    assert (blocked.high - blocked.low) > 2 * (iid.high - iid.low)
    assert iid.low > 1.5  # iid resampling calls the burst a certain slowdown
    assert blocked.low < 1.5


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="at least 2 samples"):
        bootstrap_ratio([1.0], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="confidence"):
        bootstrap_ratio([1.0, 2.0], [1.0, 2.0], confidence=1.5)
    with pytest.raises(InvalidInputError, match="positive"):
        bootstrap_ratio([0.0, 0.0], [1.0, 2.0])


def test_rounds_carry_the_machine_drift_into_the_interval() -> None:
    """Three rounds per side whose levels drift by up to 30% (a noisy machine): with the rounds known,
    the interval admits "no change"; read as one continuous run, the same samples look like a certain
    slowdown. A real 3x slowdown stays significant either way."""
    base = np.concatenate([lognormal(300, seed=s, scale=k) for s, k in ((1, 1.0), (2, 1.3), (3, 1.1))])
    cur = np.concatenate([lognormal(300, seed=s, scale=k) for s, k in ((4, 1.3), (5, 1.25), (6, 1.2))])
    rounds = (300, 300, 300)
    flat = bootstrap_ratio(base, cur, seed=0)
    aware = bootstrap_ratio(base, cur, baseline_rounds=rounds, current_rounds=rounds, seed=0)
    assert flat.low > 1.05  # the drift looks significant without rounds
    assert aware.low < 1.0 < aware.high
    slow = bootstrap_ratio(base, cur * 3, baseline_rounds=rounds, current_rounds=rounds, seed=0)
    assert slow.low > 2.0
    uneven = bootstrap_ratio(base[:850], cur, baseline_rounds=(300, 250, 300), current_rounds=rounds, seed=0)
    assert uneven.low < 1.0 < uneven.high
    with pytest.raises(InvalidInputError, match="do not add up"):
        bootstrap_ratio(base, cur, baseline_rounds=(300, 300), current_rounds=rounds)


def test_check_rounds() -> None:
    from infership.bench.stats import check_rounds

    assert check_rounds([1.0, 1.05, 0.97], [100, 98, 101]).met
    st = check_rounds([1.0, 1.5], [100, 70])
    assert not st.met and "round medians vary" in st.reason and st.windows == 2
