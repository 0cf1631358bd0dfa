"""The decision rule of the CI gate, shared by the stored-results compare and the A/B rerun: thresholds,
verdicts, exit codes, and how one latency ratio with its confidence interval is judged.

A latency statistic (median, p99), as a ratio ``current / baseline`` with an interval ``[low, high]``, is

1. a **regression** when the estimate exceeds ``1 + threshold`` and ``low > 1`` (large enough to matter,
   and not explainable by this run's noise) — the rule asv uses for ``--factor``;
2. an **improvement** in the mirror case;
3. **inconclusive** when neither holds for any statistic and the median could not have shown a slowdown of
   the threshold's size: its *detectable slowdown* (``estimate / low - 1``: how far the estimate must be
   above 1 before the interval leaves 1 behind, see :attr:`~infership.bench.stats.RatioInterval.detectable`)
   is above the threshold;
4. **ok** otherwise: no slowdown beyond the threshold, and the run was precise enough to have seen one.

Every verdict states the detectable slowdown of each statistic, so a pass on a noisy runner says how little
it proves. A gated p99 too noisy to vouch for is said in the reasons but does not by itself make the verdict
inconclusive: tails need many samples, and a gate that answered "inconclusive" to most short runs would cry
wolf as surely as one that answered "regression".
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from infership.runtime.errors import InvalidInputError

from .stats import RatioInterval

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_NOT_COMPARABLE = 2
EXIT_INCONCLUSIVE = 3
EXIT_ERROR = 4
"""A bad argument, an unreadable or malformed file, a model that cannot load: the gate could not run."""

#: Job-to-job drift assumed by stored comparisons (one standard deviation of a job's machine speed), chosen
#: from benchmarks/gate_study.py on a shared 2-core machine (docs/bench.md).
DEFAULT_JOB_DRIFT = 0.10

#: The statistic whose precision decides between "ok" and "inconclusive" (and that an A/B run extends for).
DECIDING = "p50"

EXIT_CODES = {
    EXIT_OK: "no regression",
    EXIT_REGRESSION: "regression (or a baseline run missing)",
    EXIT_NOT_COMPARABLE: "not comparable",
    EXIT_INCONCLUSIVE: "inconclusive: the run's noise was too large to decide",
    EXIT_ERROR: "error: the gate could not run",
}


class Verdict(str, enum.Enum):
    """The outcome for one run key."""

    OK = "ok"
    IMPROVEMENT = "improvement"
    REGRESSION = "regression"
    INCONCLUSIVE = "inconclusive"  # too noisy to tell a slowdown of the threshold's size from none
    NOT_COMPARABLE = "not-comparable"  # the two sides resolved to different backends or variants
    MISSING = "missing"  # in the baseline, not in the current file: fails the gate
    NEW = "new"  # only in the current file: reported, does not fail

    @property
    def fails(self) -> bool:
        return self in (Verdict.REGRESSION, Verdict.MISSING)


def exit_code_for(verdicts: Iterable[Verdict]) -> int:
    """The gate's exit code for a set of row verdicts: a failure (1) outranks a row that is not
    comparable (2), which outranks an inconclusive one (3); otherwise 0."""
    vs = set(verdicts)
    if any(v.fails for v in vs):
        return EXIT_REGRESSION
    if Verdict.NOT_COMPARABLE in vs:
        return EXIT_NOT_COMPARABLE
    if Verdict.INCONCLUSIVE in vs:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


@dataclass(frozen=True)
class Thresholds:
    """How much change is tolerated.

    Args:
        max_slowdown: Tolerated relative slowdown of the median (``0.10`` = 10%).
        max_p99_slowdown: Tolerated relative slowdown of p99; tails are noisier (default: 2.5× the median's).
            ``float("inf")`` reports p99 without gating on it (for runners too noisy for tail latency).
        max_accuracy_drop: Tolerated worsening of a quality figure (unit fraction, percent or points), in
            percentage points, in the figure's declared direction.
        confidence: Confidence level of the intervals.
        n_resamples: Bootstrap resamples.
        job_drift: How far one job's machine speed may sit from another's (a fraction, one standard
            deviation), for comparisons of results measured in different jobs: samples from one job cannot
            show it, so stored comparisons widen their intervals by it, and by how far apart the reference
            workload timed in each job says the machine was (see
            :func:`~infership.bench.compare.compare_runs`). An A/B run measures both sides in the same job
            and ignores it. 0: a runner known to be quiet.

    Raises:
        InvalidInputError: A negative threshold or drift, or a confidence outside (0, 1).
    """

    max_slowdown: float = 0.10
    max_p99_slowdown: float | None = None
    max_accuracy_drop: float = 1.0
    confidence: float = 0.95
    n_resamples: int = 2000
    job_drift: float = DEFAULT_JOB_DRIFT

    def __post_init__(self) -> None:
        if self.max_slowdown < 0 or (self.max_p99_slowdown is not None and self.max_p99_slowdown < 0):
            raise InvalidInputError(
                f"slowdown thresholds must be >= 0, got {self.max_slowdown}, {self.max_p99_slowdown}"
            )
        if self.max_accuracy_drop < 0:
            raise InvalidInputError(f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")
        if not 0 < self.confidence < 1:
            raise InvalidInputError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.job_drift < 0:
            raise InvalidInputError(f"job_drift must be >= 0, got {self.job_drift}")

    @property
    def p99_slowdown(self) -> float:
        return self.max_p99_slowdown if self.max_p99_slowdown is not None else 2.5 * self.max_slowdown

    @property
    def p99_gated(self) -> bool:
        return self.p99_slowdown != float("inf")

    def limit(self, statistic: str) -> float:
        """The tolerated slowdown of ``"p50"`` or ``"p99"``."""
        return self.max_slowdown if statistic == "p50" else self.p99_slowdown

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_slowdown": self.max_slowdown,
            "max_p99_slowdown": None if not self.p99_gated else self.p99_slowdown,  # None: off
            "max_accuracy_drop": self.max_accuracy_drop,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "job_drift": self.job_drift,
        }


@dataclass(frozen=True)
class LatencyJudgement:
    """What the rule says about the latency statistics of one run key, in words.

    Args:
        worse: Regressions (each a sentence with the ratio, its interval and the threshold).
        better: Improvements.
        undecided: Gated statistics too noisy to decide (with the detectable slowdown and the threshold).
        resolution: One sentence per statistic: the slowdown this run could have detected.
        unvouched: Gated statistics other than the median too noisy to vouch for (reported; they do not
            make the verdict inconclusive).
    """

    worse: tuple[str, ...]
    better: tuple[str, ...]
    undecided: tuple[str, ...]
    resolution: tuple[str, ...]
    unvouched: tuple[str, ...] = ()


def judge_latency(ratios: Iterable[RatioInterval | None], thresholds: Thresholds) -> LatencyJudgement:
    """Judge each ratio by the rule in the module docstring against its statistic's threshold."""
    worse: list[str] = []
    better: list[str] = []
    undecided: list[str] = []
    resolution: list[str] = []
    loose: list[str] = []
    for ratio in ratios:
        if ratio is None:
            continue
        limit = thresholds.limit(ratio.statistic)
        gated = limit != float("inf")
        det = ratio.detectable
        det_text = "any" if det == float("inf") else f"{det:.1%}"
        resolution.append(f"{ratio.statistic}: detectable slowdown {det_text}")
        if gated and ratio.estimate > 1 + limit and ratio.low > 1:
            worse.append(
                f"{ratio.statistic} {ratio.estimate - 1:+.1%} (CI {ratio.low - 1:+.1%}..{ratio.high - 1:+.1%}) "
                f"beyond +{limit:.0%}"
            )
        elif gated and ratio.estimate < 1 / (1 + limit) and ratio.high < 1:
            better.append(f"{ratio.statistic} {ratio.estimate - 1:+.1%}")
        elif gated and det > limit:
            text = (
                f"{ratio.statistic} {ratio.estimate - 1:+.1%}: this run could only detect a slowdown of "
                f"{det_text} (its own spread), more than the +{limit:.0%} threshold"
            )
            # The median decides whether the run was precise enough; a tail too noisy to vouch for is said
            # (tails need many samples, and calling every short run inconclusive for it would cry wolf too).
            (undecided if ratio.statistic == DECIDING else loose).append(text)
    return LatencyJudgement(tuple(worse), tuple(better), tuple(undecided), tuple(resolution), tuple(loose))


def verdict_of(*, worse: Iterable[str], better: Iterable[str], undecided: Iterable[str]) -> Verdict:
    """Regression when anything got worse, else inconclusive when a gated statistic could not be decided,
    else improvement when something got better, else ok."""
    if list(worse):
        return Verdict.REGRESSION
    if list(undecided):
        return Verdict.INCONCLUSIVE
    return Verdict.IMPROVEMENT if list(better) else Verdict.OK


def with_job_drift(ratio: RatioInterval, drift: float, *, shift: float = 0.0) -> RatioInterval:
    """``ratio``'s interval widened for two jobs whose machine speeds each sit ``drift`` (one standard
    deviation, a fraction) from the typical, and were measured ``shift`` apart (a factor in log space, e.g.
    ``|log(reference now / reference then)|``): in log space each half-width grows to
    ``sqrt(half² + (z · log(1 + drift) · √2)²) + shift``, ``z`` the normal quantile of the interval's level
    (the drift is a random error, added in quadrature; the measured difference a bias, added outright).
    The estimate is unchanged; with nothing to allow for, ``ratio`` is returned as is."""
    if (drift <= 0 and shift <= 0) or ratio.low <= 0 or not math.isfinite(ratio.high):
        return ratio
    z = NormalDist().inv_cdf(0.5 + ratio.confidence / 2)
    extra = z * math.log1p(drift) * math.sqrt(2)
    centre = math.log(ratio.estimate)
    down = math.hypot(centre - math.log(ratio.low), extra) + shift
    up = math.hypot(math.log(ratio.high) - centre, extra) + shift
    return replace(ratio, low=math.exp(centre - down), high=math.exp(centre + up))
