"""Statistics of an A/B run measured in interleaved blocks: baseline and candidate alternate, block by block,
so whatever the machine does to one block it does to its neighbour, and the verdict is read from the
paired block differences.

- **Median**: each block pair gives one log ratio ``d_i = log(median(candidate_i) / median(baseline_i))``.
  The estimate is the Hodges–Lehmann estimator of the ``d_i`` (the median of their pairwise averages) and
  the interval the exact Wilcoxon signed-rank interval (Hollander & Wolfe): distribution-free, deterministic,
  robust to a burst that hit one block, and it needs only that the differences be symmetric about their
  centre, which counterbalanced pairs (AB, BA, AB...) make plausible. Machine drift slower than a block pair
  cancels out of every ``d_i``.
- **p99**: a block holds too few queries for its own p99, so the p99 of all candidate samples is compared
  with the p99 of all baseline samples, and the interval comes from a bootstrap that resamples block
  *pairs* (both sides of a pair together, so drift stays matched).

Everything here is plain numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from infership.runtime.errors import InvalidInputError

from .stats import RatioInterval

#: Fewer pairs than this cannot give a 95% signed-rank interval (2⁻⁵ > 2.5 %); the A/B runner measures more.
MIN_PAIRS = 6


def signed_rank_cdf(n: int) -> np.ndarray:
    """``P(T⁺ ≤ t)`` for ``t = 0 … n(n+1)/2``: the null distribution of the Wilcoxon signed-rank statistic of
    ``n`` differences (each rank's sign a fair coin), computed exactly by convolution.

    Raises:
        InvalidInputError: ``n < 1``.
    """
    if n < 1:
        raise InvalidInputError(f"the signed-rank distribution needs n >= 1, got {n}")
    top = n * (n + 1) // 2
    p = np.zeros(top + 1)
    p[0] = 1.0
    for r in range(1, n + 1):
        # Rank r is positive or negative with probability 1/2: shift by r or stay. Halving at each step keeps
        # the values probabilities (2⁻ⁿ underflows no sooner than the smallest tail we ever look at).
        shifted = np.zeros_like(p)
        shifted[r:] = p[:-r]
        p = 0.5 * (p + shifted)
    return np.cumsum(p)


def hodges_lehmann(
    d: Sequence[float] | np.ndarray, *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Hodges–Lehmann estimate of the centre of ``d`` with its exact signed-rank confidence interval.

    Args:
        d: Paired differences (here log ratios), at least :data:`MIN_PAIRS`... any length ≥ 1 is accepted;
            with too few the interval is infinite.
        confidence: Two-sided level in (0, 1).

    Returns:
        ``(estimate, low, high)``; ``low``/``high`` are ``-inf``/``inf`` when ``d`` is too short for the level.

    Raises:
        InvalidInputError: Empty or non-finite ``d``, or a level outside (0, 1).
    """
    x = np.asarray(d, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise InvalidInputError(f"expected a non-empty 1-D array of finite differences, got {x.size} values")
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    n = x.size
    i, j = np.triu_indices(n)
    walsh = np.sort((x[i] + x[j]) / 2)
    estimate = float(np.median(walsh))
    cdf = signed_rank_cdf(n)
    alpha = (1 - confidence) / 2
    # The interval is [W_(k), W_(N+1-k)] with k the largest integer such that P(T⁺ <= k - 1) <= alpha.
    k = int(np.searchsorted(cdf, alpha, side="right"))
    if k < 1:
        return estimate, -math.inf, math.inf
    return estimate, float(walsh[k - 1]), float(walsh[walsh.size - k])


def block_medians(blocks: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    """The median of each block (latencies in ms)."""
    return np.array([float(np.median(np.asarray(b, dtype=np.float64))) for b in blocks])


def paired_median_ratio(
    baseline_blocks: Sequence[Sequence[float] | np.ndarray],
    candidate_blocks: Sequence[Sequence[float] | np.ndarray],
    *,
    confidence: float = 0.95,
) -> RatioInterval:
    """The candidate/baseline median ratio from paired blocks (see the module docstring).

    Args:
        baseline_blocks, candidate_blocks: Latencies per block, block ``i`` of each side measured next to each
            other; the same number of blocks on both sides.
        confidence: Two-sided level.

    Returns:
        A :class:`~infership.bench.stats.RatioInterval` (statistic ``p50``); its bounds are 0 / infinity
        with fewer than :data:`MIN_PAIRS` pairs.

    Raises:
        InvalidInputError: Different block counts, an empty block or a non-positive latency.
    """
    a, b = _paired(baseline_blocks, candidate_blocks)
    ma, mb = block_medians(a), block_medians(b)
    if np.any(ma <= 0) or np.any(mb <= 0):
        raise InvalidInputError("block medians must be positive to form ratios")
    est, lo, hi = hodges_lehmann(np.log(mb) - np.log(ma), confidence=confidence)
    return RatioInterval("p50", math.exp(est), math.exp(lo), math.exp(hi), confidence)


def paired_percentile_ratio(
    baseline_blocks: Sequence[Sequence[float] | np.ndarray],
    candidate_blocks: Sequence[Sequence[float] | np.ndarray],
    *,
    percentile: float = 99.0,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RatioInterval:
    """``percentile`` of all candidate samples over that of all baseline samples, with a bootstrap interval
    that resamples block pairs (both sides of a pair together).

    Raises:
        InvalidInputError: Different block counts, empty blocks, a non-positive statistic or bad parameters.
    """
    if not 0 < confidence < 1 or n_resamples < 100:
        raise InvalidInputError(
            f"need 0 < confidence < 1 and n_resamples >= 100, got {confidence}, {n_resamples}"
        )
    a, b = _paired(baseline_blocks, candidate_blocks)
    qa = float(np.percentile(np.concatenate(a), percentile))
    qb = float(np.percentile(np.concatenate(b), percentile))
    if qa <= 0 or qb <= 0:
        raise InvalidInputError(f"p{percentile:g} must be positive to form a ratio, got {qa} and {qb}")
    # Blocks thinned to the shortest one's length (order kept) make the resampling a matrix operation;
    # fewer samples can only widen the interval. The estimate above uses every sample.
    m = min(min(x.size for x in a), min(x.size for x in b))
    grid_a = np.stack([_evenly(x, m) for x in a])
    grid_b = np.stack([_evenly(x, m) for x in b])
    rng = np.random.default_rng(seed)
    n = len(a)
    ratios = np.empty(n_resamples)
    chunk = max(1, (2 << 20) // grid_a.size)  # keeps each resampled matrix under ~16 MB
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        pick = rng.integers(0, n, size=(stop - start, n))
        ra = np.percentile(grid_a[pick].reshape(stop - start, -1), percentile, axis=1)
        rb = np.percentile(grid_b[pick].reshape(stop - start, -1), percentile, axis=1)
        ratios[start:stop] = rb / ra
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(ratios, [alpha, 1 - alpha]))
    return RatioInterval(f"p{percentile:g}", qb / qa, low, high, confidence)


def _paired(
    baseline_blocks: Sequence[Sequence[float] | np.ndarray],
    candidate_blocks: Sequence[Sequence[float] | np.ndarray],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    a = [np.asarray(x, dtype=np.float64) for x in baseline_blocks]
    b = [np.asarray(x, dtype=np.float64) for x in candidate_blocks]
    if len(a) != len(b) or not a:
        raise InvalidInputError(
            f"paired blocks: expected the same non-zero block count, got {len(a)} and {len(b)}"
        )
    if any(x.size == 0 for x in (*a, *b)):
        raise InvalidInputError("paired blocks: a block holds no sample")
    return a, b


def _evenly(x: np.ndarray, m: int) -> np.ndarray:
    """Exactly ``m`` samples of ``x`` spread evenly over it, order kept."""
    return x if x.size == m else x[np.linspace(0, x.size - 1, m).round().astype(np.int64)]
