"""Compare a current results file with a baseline: the CI gate.

Runs are matched by :attr:`RunResult.key` (model, backend@device, precision, scenario, batch size,
concurrency, and preprocessing / server rate). For each matched pair, the median and the p99 are compared
as ratios ``current / baseline`` with percentile-bootstrap confidence intervals over the raw samples:
a block bootstrap for one continuous run (bursts of interference cluster in time), a two-stage bootstrap
over rounds for runs measured with ``--rounds`` (so the machine's drift between rounds widens the
interval); see :func:`~infership.bench.stats.bootstrap_ratio`.

A statistic is a **regression** when both hold:

1. the ratio's point estimate exceeds ``1 + threshold`` (``max_slowdown`` for the median,
   ``max_p99_slowdown`` for p99): the slowdown is large enough to matter; and
2. the interval's lower bound exceeds 1: the slowdown is not explainable by sampling noise.

(It is an **improvement** in the mirror case.) This is the rule asv uses for ``--factor``. Run-to-run drift
on a shared machine shows up as a shift smaller than the threshold, so it does not fail CI; a real slowdown
is larger than the threshold and, with hundreds of samples, far outside the interval. Besides latency,
a run regresses when an accuracy figure of its variant (``variant.validation`` in the manifest) drops by
more than ``max_accuracy_drop`` points, or when a server run met its p99 bound in the baseline and no
longer does. A baseline run missing from the current file fails the gate too: a gate that passes because
a measurement silently stopped happening is no gate.

Exit codes: 0 no regression, 1 regression, 2 not comparable (different environment fingerprints, unless
forced; no run in common; unreadable or foreign files).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infership.runtime.errors import InfershipError

from .results import BenchResults, RunResult
from .stats import RatioInterval, bootstrap_ratio

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_NOT_COMPARABLE = 2

_ENV_FIELDS = (
    "cpu.model",
    "cpu.arch",
    "cpu.logical_cores",
    "cpu.physical_cores",
    "cpu.flags",
    "gpus",
    "libraries",
)
_HIGHER_IS_BETTER = ("accuracy", "agreement", "top1", "top5", "f1")


class NotComparableError(InfershipError, ValueError):
    """The two results files cannot be compared (other machine or libraries, or no run in common)."""


class Verdict(str, enum.Enum):
    """The outcome for one run key."""

    OK = "ok"
    IMPROVEMENT = "improvement"
    REGRESSION = "regression"
    MISSING = "missing"  # in the baseline, not in the current file: fails the gate
    NEW = "new"  # only in the current file: reported, does not fail

    @property
    def fails(self) -> bool:
        return self in (Verdict.REGRESSION, Verdict.MISSING)


@dataclass(frozen=True)
class Thresholds:
    """How much change is tolerated.

    Args:
        max_slowdown: Tolerated relative slowdown of the median (``0.10`` = 10%).
        max_p99_slowdown: Tolerated relative slowdown of p99; tails are noisier (default: 2.5× the median's).
            ``float("inf")`` reports p99 without gating on it (for runners too noisy for tail latency).
        max_accuracy_drop: Tolerated drop of an accuracy figure, in percentage points.
        confidence: Confidence level of the bootstrap intervals.
        n_resamples: Bootstrap resamples.
    """

    max_slowdown: float = 0.10
    max_p99_slowdown: float | None = None
    max_accuracy_drop: float = 1.0
    confidence: float = 0.95
    n_resamples: int = 2000

    def __post_init__(self) -> None:
        if self.max_slowdown < 0 or (self.max_p99_slowdown is not None and self.max_p99_slowdown < 0):
            raise ValueError(
                f"slowdown thresholds must be >= 0, got {self.max_slowdown}, {self.max_p99_slowdown}"
            )
        if self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")

    @property
    def p99_slowdown(self) -> float:
        return self.max_p99_slowdown if self.max_p99_slowdown is not None else 2.5 * self.max_slowdown

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_slowdown": self.max_slowdown,
            "max_p99_slowdown": None if self.p99_slowdown == float("inf") else self.p99_slowdown,  # None: off
            "max_accuracy_drop": self.max_accuracy_drop,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
        }


@dataclass(frozen=True)
class AccuracyChange:
    """One accuracy figure in both files. ``drop_points`` > 0 means the current one is worse."""

    metric: str
    baseline: float
    current: float
    drop_points: float
    regression: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class RunComparison:
    """The comparison of one run key.

    Args:
        key: The run key.
        verdict: The outcome.
        p50, p99: Ratio current/baseline with its confidence interval (``None`` for missing/new runs).
        throughput_ratio: current/baseline items per second (informational).
        accuracy: Accuracy figures present in both.
        reasons: Why the verdict, in words (and notes such as an unstable run).
    """

    key: str
    verdict: Verdict
    p50: RatioInterval | None = None
    p99: RatioInterval | None = None
    throughput_ratio: float | None = None
    accuracy: tuple[AccuracyChange, ...] = ()
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "verdict": self.verdict.value,
            "p50": self.p50.to_dict() if self.p50 else None,
            "p99": self.p99.to_dict() if self.p99 else None,
            "throughput_ratio": self.throughput_ratio,
            "accuracy": [a.to_dict() for a in self.accuracy],
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Comparison:
    """All run comparisons, with what differed in the environments (when forced)."""

    rows: tuple[RunComparison, ...]
    thresholds: Thresholds
    forced: bool = False
    environment_differences: tuple[str, ...] = ()

    @property
    def failures(self) -> tuple[RunComparison, ...]:
        return tuple(r for r in self.rows if r.verdict.fails)

    @property
    def exit_code(self) -> int:
        """0 when nothing fails, 1 on a regression or missing run."""
        return EXIT_REGRESSION if self.failures else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "thresholds": self.thresholds.to_dict(),
            "forced": self.forced,
            "environment_differences": list(self.environment_differences),
            "rows": [r.to_dict() for r in self.rows],
        }


def compare_results(
    baseline: BenchResults,
    current: BenchResults,
    *,
    thresholds: Thresholds | None = None,
    force: bool = False,
    seed: int = 0,
) -> Comparison:
    """Compare ``current`` with ``baseline`` run by run (the rule is in the module docstring).

    Args:
        baseline: The reference results.
        current: The results to judge.
        thresholds: Tolerances (default :class:`Thresholds`).
        force: Compare even when the environment fingerprints differ (the differences are listed).
        seed: Bootstrap seed (the decision is deterministic for given files and seed).

    Returns:
        The :class:`Comparison`; its ``exit_code`` is what a CI job should exit with.

    Raises:
        NotComparableError: Different fingerprints without ``force``, or no run key in common.
    """
    thresholds = thresholds or Thresholds()
    diffs = tuple(environment_differences(baseline.environment, current.environment))
    if baseline.fingerprint != current.fingerprint and not force:
        detail = "; ".join(diffs) if diffs else "the recorded environments differ"
        raise NotComparableError(
            f"environment fingerprints differ (baseline {baseline.fingerprint}, current {current.fingerprint}): "
            f"{detail}. Compare results from the same machine and libraries, or pass --force"
        )
    base = {r.key: r for r in baseline.runs}
    cur = {r.key: r for r in current.runs}
    common = [k for k in base if k in cur]
    if not common:
        raise NotComparableError(
            f"no run in common: baseline has {sorted(base) or 'no runs'}, current has {sorted(cur) or 'no runs'}"
        )
    rows = []
    for key in base:
        if key in cur:
            rows.append(compare_runs(base[key], cur[key], thresholds=thresholds, seed=seed))
        else:
            b = base[key]
            why = next(
                (s.reason for s in current.skipped if (s.backend, s.precision) == (b.backend, b.precision)),
                "",
            )
            reason = f"in the baseline, skipped now: {why}" if why else "in the baseline, not measured now"
            rows.append(RunComparison(key, Verdict.MISSING, reasons=(reason,)))
    rows += [RunComparison(k, Verdict.NEW, reasons=("not in the baseline",)) for k in cur if k not in base]
    forced = force and baseline.fingerprint != current.fingerprint
    return Comparison(tuple(rows), thresholds, forced, diffs if forced else ())


def compare_runs(
    baseline: RunResult, current: RunResult, *, thresholds: Thresholds, seed: int = 0
) -> RunComparison:
    """Compare two runs of the same key (see the module docstring for the rule)."""
    conf, n = thresholds.confidence, thresholds.n_resamples
    common = dict(
        confidence=conf, n_resamples=n, baseline_rounds=baseline.rounds, current_rounds=current.rounds
    )
    p50 = bootstrap_ratio(baseline.samples_ms, current.samples_ms, percentile=50, seed=seed, **common)
    p99 = bootstrap_ratio(baseline.samples_ms, current.samples_ms, percentile=99, seed=seed + 1, **common)
    worse: list[str] = []
    better: list[str] = []
    for ratio, limit in ((p50, thresholds.max_slowdown), (p99, thresholds.p99_slowdown)):
        if ratio.estimate > 1 + limit and ratio.low > 1:
            worse.append(
                f"{ratio.statistic} {ratio.estimate - 1:+.1%} (CI {ratio.low - 1:+.1%}..{ratio.high - 1:+.1%}) "
                f"beyond +{limit:.0%}"
            )
        elif ratio.estimate < 1 / (1 + limit) and ratio.high < 1:
            better.append(f"{ratio.statistic} {ratio.estimate - 1:+.1%}")
    accuracy = tuple(
        compare_accuracy(baseline.accuracy, current.accuracy, max_drop=thresholds.max_accuracy_drop)
    )
    worse += [
        f"{a.metric} dropped {a.drop_points:.2f} points > {thresholds.max_accuracy_drop:g}"
        for a in accuracy
        if a.regression
    ]
    if baseline.server and current.server and baseline.server.bound_met and current.server.bound_met is False:
        worse.append(f"p99 bound {current.server.latency_bound_ms:g} ms met in the baseline, missed now")
    notes = [
        f"{name} run unstable ({r.stability.reason})"
        for name, r in (("baseline", baseline), ("current", current))
        if not r.stability.met
    ]
    verdict = Verdict.REGRESSION if worse else (Verdict.IMPROVEMENT if better else Verdict.OK)
    tput = current.throughput / baseline.throughput if baseline.throughput > 0 else None
    return RunComparison(baseline.key, verdict, p50, p99, tput, accuracy, tuple(worse + better + notes))


def compare_accuracy(
    baseline: Mapping[str, Any] | None, current: Mapping[str, Any] | None, *, max_drop: float
) -> list[AccuracyChange]:
    """Accuracy-like figures (higher is better) present in both validation dicts.

    Figures whose name contains ``accuracy``, ``agreement``, ``top1``, ``top5``, ``f1``... are compared.
    When both values lie in [0, 1] they are fractions and the drop is scaled to percentage points (×100);
    otherwise the values are taken as already in points (percent or dB).
    """
    if not baseline or not current:
        return []
    out = []
    for name, b in _flat_numbers(baseline).items():
        c = _flat_numbers(current).get(name)
        if c is None or not _is_accuracy_figure(name):
            continue
        scale = 100.0 if 0.0 <= b <= 1.0 and 0.0 <= c <= 1.0 else 1.0
        drop = (b - c) * scale
        out.append(AccuracyChange(name, b, c, drop, drop > max_drop))
    return out


def _is_accuracy_figure(name: str) -> bool:
    low = name.lower()
    leaf = low.rsplit(".", 1)[-1]
    # Thresholds recorded next to the figures (``tolerance.min_top1``) are settings, not results.
    if "tolerance" in low or leaf.startswith(("min_", "max_")):
        return False
    return any(word in leaf for word in _HIGHER_IS_BETTER)


def _flat_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[name] = float(v)
        elif isinstance(v, Mapping):
            out.update(_flat_numbers(v, f"{name}."))
    return out


def environment_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two recorded environments in the fields that decide speed."""
    out = []
    for path in _ENV_FIELDS:
        va, vb = _get(a, path), _get(b, path)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            for k in sorted(set(va) | set(vb)):
                if va.get(k) != vb.get(k):
                    out.append(f"{path}.{k}: {va.get(k)} → {vb.get(k)}")
        elif va != vb:
            out.append(f"{path}: {va} → {vb}")
    return out


def _get(d: Mapping[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur
