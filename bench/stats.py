"""Statistics of latency samples: percentiles, a stability check, and bootstrap confidence intervals.

Percentiles use linear interpolation between order statistics (numpy's default, Hyndman & Fan type 7), so
``p50`` of ``[1, 2, 3, 4]`` is 2.5. Everything here is plain numpy: no scipy, no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from infership.runtime.errors import InvalidInputError

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)

# Bootstrapping a quantile of n samples costs O(n) per resample; above this many samples every k-th sample
# is kept (order matters for the block bootstrap). Fewer samples give a wider interval, never a narrower one.
MAX_BOOTSTRAP_SAMPLES = 5000

# Contiguous blocks per run for the block bootstrap (see bootstrap_ratio).
DEFAULT_BLOCKS = 20


@dataclass(frozen=True)
class LatencySummary:
    """Summary of per-query latencies, in milliseconds.

    Args:
        count: Number of samples.
        mean, std: Arithmetic mean and sample standard deviation (``ddof=1``; 0 for one sample).
        min, max: Extremes.
        p50, p90, p95, p99: Percentiles, linear interpolation between order statistics.
    """

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySummary:
        return cls(
            **{k: (int(data[k]) if k == "count" else float(data[k])) for k in cls.__dataclass_fields__}
        )


def summarize(samples_ms: Sequence[float] | np.ndarray) -> LatencySummary:
    """Summarize latency samples.

    Args:
        samples_ms: Per-query latencies in milliseconds; at least one, all finite.

    Returns:
        The :class:`LatencySummary`.

    Raises:
        InvalidInputError: No samples, or a sample that is NaN or infinite.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise InvalidInputError(f"expected a non-empty 1-D sequence of latencies, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("latency samples contain NaN or infinity")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, PERCENTILES))
    return LatencySummary(
        count=int(x.size),
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        min=float(x.min()),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(x.max()),
    )


@dataclass(frozen=True)
class Stability:
    """Whether the last measurement windows agree, like perf_analyzer's ``--stability-percentage``.

    The measurement is cut into consecutive windows of equal duration; it is stable when, over the last
    ``windows`` of them, every window's median latency and every window's throughput lie within
    ``tolerance`` (a fraction) of their average across those windows.

    Args:
        met: Whether the criterion was met (``False`` also when there were too few samples to judge).
        tolerance: The allowed relative deviation, e.g. ``0.1`` for ±10%.
        windows: Number of windows compared.
        latency_spread: Largest relative deviation of a window's median latency from the average.
        throughput_spread: Largest relative deviation of a window's throughput from the average.
        reason: Why it was not met, or ``""``.
    """

    met: bool
    tolerance: float
    windows: int
    latency_spread: float | None
    throughput_spread: float | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stability:
        return cls(
            met=bool(data["met"]),
            tolerance=float(data["tolerance"]),
            windows=int(data["windows"]),
            latency_spread=None if data.get("latency_spread") is None else float(data["latency_spread"]),
            throughput_spread=None
            if data.get("throughput_spread") is None
            else float(data["throughput_spread"]),
            reason=str(data.get("reason", "")),
        )


def check_stability(
    latencies_ms: Sequence[float] | np.ndarray,
    end_times_s: Sequence[float] | np.ndarray,
    *,
    window_s: float,
    windows: int = 3,
    tolerance: float = 0.10,
    min_per_window: int = 3,
) -> Stability:
    """Judge whether the last ``windows`` windows of ``window_s`` seconds agree (see :class:`Stability`).

    Args:
        latencies_ms: Per-query latencies.
        end_times_s: When each query completed, in seconds from the start of measurement (same order).
        window_s: Window length in seconds.
        windows: How many trailing windows must agree.
        tolerance: Allowed relative deviation from the windows' average.
        min_per_window: Fewer completed queries in a window than this is "too few to judge".

    Returns:
        The :class:`Stability` verdict.

    Raises:
        InvalidInputError: Mismatched lengths, or a non-positive window, window count or tolerance.
    """
    lat = np.asarray(latencies_ms, dtype=np.float64)
    end = np.asarray(end_times_s, dtype=np.float64)
    if lat.shape != end.shape:
        raise InvalidInputError(f"latencies and end times differ in length: {lat.size} vs {end.size}")
    if window_s <= 0 or windows < 2 or tolerance <= 0:
        raise InvalidInputError(
            f"expected window_s > 0, windows >= 2, tolerance > 0; got {window_s}, {windows}, {tolerance}"
        )
    if lat.size == 0:
        return Stability(False, tolerance, windows, None, None, "no samples")
    stop = float(end.max())
    start = stop - windows * window_s
    if start < -1e-9:
        return Stability(
            False, tolerance, windows, None, None, f"measured {stop:.3g} s, fewer than {windows} windows"
        )
    medians, rates = [], []
    for i in range(windows):
        lo, hi = start + i * window_s, start + (i + 1) * window_s
        mask = (end > lo) & (end <= hi) if i else (end >= lo) & (end <= hi)
        n = int(mask.sum())
        if n < min_per_window:
            return Stability(
                False, tolerance, windows, None, None, f"a window holds {n} < {min_per_window} queries"
            )
        medians.append(float(np.median(lat[mask])))
        rates.append(n / window_s)
    lat_spread = _max_relative_deviation(medians)
    rate_spread = _max_relative_deviation(rates)
    met = lat_spread <= tolerance and rate_spread <= tolerance
    reason = (
        ""
        if met
        else (
            f"window medians vary by {lat_spread:.1%} and throughputs by {rate_spread:.1%} (tolerance {tolerance:.0%})"
        )
    )
    return Stability(met, tolerance, windows, lat_spread, rate_spread, reason)


def check_rounds(
    medians_ms: Sequence[float], throughputs: Sequence[float], *, tolerance: float = 0.10
) -> Stability:
    """Stability of a run measured in several rounds: every round's median latency and throughput within
    ``tolerance`` of their average across rounds (the same criterion as :func:`check_stability`, with
    rounds as the windows).

    Raises:
        InvalidInputError: Fewer than two rounds, or lengths that differ.
    """
    if len(medians_ms) < 2 or len(medians_ms) != len(throughputs):
        raise InvalidInputError(
            f"expected >= 2 rounds with one median and one throughput each, got {len(medians_ms)}"
        )
    lat_spread = _max_relative_deviation(medians_ms)
    rate_spread = _max_relative_deviation(throughputs)
    met = lat_spread <= tolerance and rate_spread <= tolerance
    reason = (
        ""
        if met
        else (
            f"round medians vary by {lat_spread:.1%} and throughputs by {rate_spread:.1%} (tolerance {tolerance:.0%})"
        )
    )
    return Stability(met, tolerance, len(medians_ms), lat_spread, rate_spread, reason)


def _max_relative_deviation(values: Sequence[float]) -> float:
    avg = float(np.mean(values))
    if avg == 0:
        return 0.0
    return float(max(abs(v - avg) for v in values) / avg)


@dataclass(frozen=True)
class RatioInterval:
    """A ratio ``statistic(current) / statistic(baseline)`` with a bootstrap confidence interval.

    Args:
        statistic: ``"p50"``, ``"p99"``... (the percentile compared).
        estimate: The ratio of the statistic on the full samples (``1.2`` = 20% slower).
        low, high: Percentile-bootstrap confidence bounds of the ratio.
        confidence: The interval's confidence level, e.g. ``0.95``.
    """

    statistic: str
    estimate: float
    low: float
    high: float
    confidence: float

    @property
    def detectable(self) -> float:
        """The smallest slowdown this interval could tell from no change, as a fraction: the distance from
        the estimate down to the lower bound (``estimate / low - 1``). A true slowdown smaller than this
        leaves 1 inside the interval; ``inf`` when the interval is unbounded."""
        if self.low <= 0 or not math.isfinite(self.low) or not math.isfinite(self.estimate):
            return math.inf
        return max(0.0, self.estimate / self.low - 1.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["detectable"] = None if math.isinf(self.detectable) else self.detectable
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RatioInterval:
        return cls(
            statistic=str(data["statistic"]),
            estimate=float(data["estimate"]),
            low=float(data["low"]),
            high=float(data["high"]),
            confidence=float(data["confidence"]),
        )


def bootstrap_ratio(
    baseline: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    percentile: float = 50.0,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    blocks: int | None = DEFAULT_BLOCKS,
    baseline_rounds: Sequence[int] = (),
    current_rounds: Sequence[int] = (),
    seed: int = 0,
) -> RatioInterval:
    """Bootstrap confidence interval of ``percentile(current) / percentile(baseline)``.

    Each side is resampled independently (the runs are independent), and the interval is the percentile
    interval of the resampled ratios. Latency samples are not independent: interference on a noisy
    machine comes in bursts, so slow queries cluster in time. Resampling single samples would then give
    intervals that are far too narrow and make noise look significant. By default each side is therefore
    cut into ``blocks`` contiguous blocks (in completion order) and whole blocks are resampled (a
    non-overlapping block bootstrap, Künsch 1989), so a burst that hit a twentieth of a run moves the
    resampled statistic as much as it could move a re-run. Sides with more than
    :data:`MAX_BOOTSTRAP_SAMPLES` samples are first thinned by keeping every k-th sample (order kept),
    which can only widen the interval.

    A side measured in several rounds spread over time (``infership bench --rounds``) is resampled in two
    stages instead: rounds with replacement, then samples within each chosen round. The spread between
    rounds, i.e. how much the machine drifted while it was measured, then enters the interval: drift
    that would make two separate runs disagree no longer looks like a significant change.

    Args:
        baseline: Baseline latencies, in completion order.
        current: Current latencies, in completion order.
        percentile: Which percentile to compare (50 = median, 99 = p99).
        confidence: Two-sided confidence level in (0, 1).
        n_resamples: Bootstrap resamples.
        blocks: Contiguous blocks per side; ``None`` resamples single samples (for independent samples).
            Fewer than 5 samples per block also falls back to single samples.
        baseline_rounds, current_rounds: Samples per round, in order (they must sum to the sample count);
            empty or a single round: one continuous run, resampled in blocks.
        seed: Seed of the resampling generator (the result is deterministic for a given seed).

    Returns:
        The :class:`RatioInterval`.

    Raises:
        InvalidInputError: A side has fewer than two samples, a non-positive statistic, or bad parameters.
    """
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    if not 0 <= percentile <= 100:
        raise InvalidInputError(f"percentile must be in [0, 100], got {percentile}")
    if n_resamples < 100:
        raise InvalidInputError(f"n_resamples must be >= 100, got {n_resamples}")
    if blocks is not None and blocks < 2:
        raise InvalidInputError(f"blocks must be >= 2 or None, got {blocks}")
    rng = np.random.default_rng(seed)
    a = _checked(baseline, "baseline")
    b = _checked(current, "current")
    qa = float(np.percentile(a, percentile))
    qb = float(np.percentile(b, percentile))
    if qa <= 0 or qb <= 0:
        raise InvalidInputError(f"p{percentile:g} must be positive to form a ratio, got {qa} and {qb}")
    ra = _resample_side(a, baseline_rounds, "baseline", percentile, n_resamples, blocks, rng)
    rb = _resample_side(b, current_rounds, "current", percentile, n_resamples, blocks, rng)
    ratios = rb / ra
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(ratios, [alpha, 1 - alpha]))
    return RatioInterval(f"p{percentile:g}", qb / qa, low, high, confidence)


def _checked(samples: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise InvalidInputError(f"{name}: need at least 2 samples to bootstrap, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{name}: samples contain NaN or infinity")
    return x


def _thinned(x: np.ndarray, limit: int) -> np.ndarray:
    return x[:: -(-x.size // limit)] if x.size > limit else x


def _evenly(x: np.ndarray, m: int) -> np.ndarray:
    """Exactly ``m`` samples of ``x`` spread evenly over it, order kept."""
    return x if x.size == m else x[np.linspace(0, x.size - 1, m).round().astype(np.int64)]


def _resample_side(
    x: np.ndarray,
    rounds: Sequence[int],
    name: str,
    q: float,
    n_resamples: int,
    blocks: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    sizes = [int(n) for n in rounds]
    if len(sizes) < 2:
        return _bootstrap_percentile(_thinned(x, MAX_BOOTSTRAP_SAMPLES), q, n_resamples, blocks, rng)
    if sum(sizes) != x.size or min(sizes) < 1:
        raise InvalidInputError(f"{name}: round sizes {sizes} do not add up to the {x.size} samples")
    # Equal-sized rounds (each thinned to the smallest, keeping order) make the resampling a matrix operation.
    m = min(min(sizes), MAX_BOOTSTRAP_SAMPLES // len(sizes))
    bounds = np.cumsum([0, *sizes])
    grid = np.stack([_evenly(x[lo:hi], m) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
    k = len(sizes)
    out = np.empty(n_resamples)
    chunk = max(1, (2 << 20) // grid.size)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        pick = rng.integers(0, k, size=(stop - start, k, 1))
        within = rng.integers(0, m, size=(stop - start, k, m))
        out[start:stop] = np.percentile(grid[pick, within].reshape(stop - start, -1), q, axis=1)
    return out


def _bootstrap_percentile(
    x: np.ndarray, q: float, n_resamples: int, blocks: int | None, rng: np.random.Generator
) -> np.ndarray:
    if blocks is None or x.size < 5 * blocks:
        blocks, length = x.size, 1
    else:
        length = x.size // blocks
    # Equal blocks: the few samples past blocks * length (fewer than one block) are left out.
    grid = x[: blocks * length].reshape(blocks, length)
    out = np.empty(n_resamples)
    # Chunks keep the resampled matrix under ~16 MB whatever the sample count.
    chunk = max(1, (2 << 20) // grid.size)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, blocks, size=(stop - start, blocks))
        out[start:stop] = np.percentile(grid[idx].reshape(stop - start, -1), q, axis=1)
    return out
