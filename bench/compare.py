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
on a noisy machine shows up as a shift smaller than the threshold, so it does not fail CI; a real slowdown
is larger than the threshold and, with hundreds of samples, far outside the interval.

Besides latency, the figures of the run's variant (``variant.validation`` in the manifest, recorded as the
run's ``accuracy``) are compared by their declaration in :mod:`infership.runtime.figures` (unit and
direction), never by their name or their value range:

- a **quality figure** (unit fraction, percent or points, such as ``accuracy``, ``accuracy_drop``,
  ``loss_points`` or ``top1_agreement``) regresses when it got worse, in its declared direction, by more
  than ``max_accuracy_drop`` percentage points (a fraction's change is scaled ×100);
- a **count with a direction** (``nonfinite``: NaN/Inf outputs) regresses on any worsening: a variant that
  starts producing non-finite values fails, however few;
- any other declared figure (dB, cosine, absolute errors, latencies, counts without a direction) is
  reported with its direction (better / worse / unchanged) but not gated;
- an undeclared name (a setting recorded next to the figures, such as ``tolerance.min_top1``) is neither
  compared nor gated. A name earlier versions wrote for a declared figure (``accuracy_int8`` for
  ``accuracy``, see :data:`~infership.runtime.figures.ALIASES`) is read as that figure, so an old baseline
  is compared with a current record figure by figure.

A server run regresses too when it met its p99 bound in the baseline and no longer does. A baseline run
missing from the current file fails the gate too: a gate that passes because a measurement silently
stopped happening is no gate.

Exit codes: 0 no regression, 1 regression, 2 not comparable (different environment fingerprints, unless
forced; no run in common; unreadable or foreign files).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infership.runtime.errors import InfershipError, InvalidInputError
from infership.runtime.figures import Better, FigureInfo, Unit, figure_info

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


#: Slack when comparing a worsening in points with the tolerated drop (float rounding, not a tolerance).
_POINTS_EPS = 1e-9


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
        max_accuracy_drop: Tolerated worsening of a quality figure (unit fraction, percent or points), in
            percentage points, in the figure's declared direction.
        confidence: Confidence level of the bootstrap intervals.
        n_resamples: Bootstrap resamples.

    Raises:
        InvalidInputError: A negative threshold.
    """

    max_slowdown: float = 0.10
    max_p99_slowdown: float | None = None
    max_accuracy_drop: float = 1.0
    confidence: float = 0.95
    n_resamples: int = 2000

    def __post_init__(self) -> None:
        if self.max_slowdown < 0 or (self.max_p99_slowdown is not None and self.max_p99_slowdown < 0):
            raise InvalidInputError(
                f"slowdown thresholds must be >= 0, got {self.max_slowdown}, {self.max_p99_slowdown}"
            )
        if self.max_accuracy_drop < 0:
            raise InvalidInputError(f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")

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
class FigureChange:
    """One declared figure of the variant, in both files.

    Args:
        metric: The figure's (dotted) name in the validation record.
        unit: Its declared unit (:class:`~infership.runtime.figures.Unit` value).
        better: Its declared direction (``higher``, ``lower`` or ``neither``).
        baseline, current: The two values.
        worsening: How much worse ``current`` is, in the figure's unit (negative: better; 0 for figures
            without a direction).
        worsening_points: The same in percentage points for quality figures; ``None`` for the others.
        gated: Whether the figure is gated (a quality figure or a count with a direction, see
            :func:`is_gated`).
        regression: Gated and worse by more than the tolerated points (quality figures), or worse at all
            (counts).
    """

    metric: str
    unit: str
    better: str
    baseline: float
    current: float
    worsening: float
    worsening_points: float | None
    gated: bool
    regression: bool

    @property
    def change(self) -> str:
        """``"worse"``, ``"better"`` or ``"unchanged"`` in the figure's declared direction."""
        if self.worsening > 0:
            return "worse"
        return "better" if self.worsening < 0 else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "change": self.change}


@dataclass(frozen=True)
class RunComparison:
    """The comparison of one run key.

    Args:
        key: The run key.
        verdict: The outcome.
        p50, p99: Ratio current/baseline with its confidence interval (``None`` for missing/new runs).
        throughput_ratio: current/baseline items per second (informational).
        figures: The variant's declared figures present in both (see :func:`compare_figures`).
        reasons: Why the verdict, in words (and notes such as an unstable run).
    """

    key: str
    verdict: Verdict
    p50: RatioInterval | None = None
    p99: RatioInterval | None = None
    throughput_ratio: float | None = None
    figures: tuple[FigureChange, ...] = ()
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "verdict": self.verdict.value,
            "p50": self.p50.to_dict() if self.p50 else None,
            "p99": self.p99.to_dict() if self.p99 else None,
            "throughput_ratio": self.throughput_ratio,
            "figures": [f.to_dict() for f in self.figures],
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
    figures = tuple(
        compare_figures(baseline.accuracy, current.accuracy, max_drop=thresholds.max_accuracy_drop)
    )
    worse += [_regression_reason(f, thresholds.max_accuracy_drop) for f in figures if f.regression]
    notes = [
        f"{f.metric} worse: {f.baseline:g} → {f.current:g} {f.unit} ({f.better} is better; not gated)"
        for f in figures
        if not f.gated and f.change == "worse"
    ]
    if baseline.server and current.server and baseline.server.bound_met and current.server.bound_met is False:
        worse.append(f"p99 bound {current.server.latency_bound_ms:g} ms met in the baseline, missed now")
    notes += [
        f"{name} run unstable ({r.stability.reason})"
        for name, r in (("baseline", baseline), ("current", current))
        if not r.stability.met
    ]
    verdict = Verdict.REGRESSION if worse else (Verdict.IMPROVEMENT if better else Verdict.OK)
    tput = current.throughput / baseline.throughput if baseline.throughput > 0 else None
    return RunComparison(baseline.key, verdict, p50, p99, tput, figures, tuple(worse + better + notes))


def is_gated(info: FigureInfo) -> bool:
    """Whether the gate fails on a worsening of this figure: a quality figure (fraction, percent or
    points) with a direction, gated against the tolerated points, or a count with a direction
    (``nonfinite``), where any worsening is a regression. The rest is reported, not gated."""
    if info.better is Better.NEITHER:
        return False
    return info.unit.points_per_unit is not None or info.unit is Unit.COUNT


def compare_figures(
    baseline: Mapping[str, Any] | None, current: Mapping[str, Any] | None, *, max_drop: float
) -> list[FigureChange]:
    """The declared figures present in both validation records, judged by their declaration.

    Each numeric value (nested records flattened to dotted names) is looked up with
    :func:`~infership.runtime.figures.figure_info` and compared under the figure's declared name, so a
    name an earlier version wrote (``accuracy_int8``) meets the current one (``accuracy``); undeclared names
    (settings such as ``tolerance.min_top1``) are skipped. A quality figure (points-comparable unit) with a
    direction is a regression when it got worse by more than ``max_drop`` percentage points; a count with
    a direction (``nonfinite``) when it got worse at all. The others are reported with their direction
    only (see :func:`is_gated`).

    Args:
        baseline, current: The two records (``RunResult.accuracy``); ``None`` or empty: nothing to compare.
        max_drop: Tolerated worsening of a quality figure, in percentage points.

    Returns:
        One :class:`FigureChange` per declared figure present in both (named as declared), in the
        baseline's order.
    """
    if not baseline or not current:
        return []
    cur = _declared_figures(current)
    out = []
    for name, (info, b) in _declared_figures(baseline).items():
        if name not in cur:
            continue
        c = cur[name][1]
        points = info.worsening_points(b, c)
        worsening = info.worsening(b, c)
        gated = is_gated(info)
        if not gated:
            regression = False
        elif points is not None:
            # Fractions scaled ×100 carry rounding error: 0.99 → 0.98 is one point, not 1.0000000000000009
            regression = points > max_drop + _POINTS_EPS
        else:
            regression = worsening > 0  # a count: one more NaN is one too many
        out.append(
            FigureChange(
                metric=name,
                unit=info.unit.value,
                better=info.better.value,
                baseline=b,
                current=c,
                worsening=worsening,
                worsening_points=points,
                gated=gated,
                regression=regression,
            )
        )
    return out


def _regression_reason(f: FigureChange, max_drop: float) -> str:
    if f.worsening_points is None:
        return (
            f"{f.metric} worse by {f.worsening:g} ({f.baseline:g} → {f.current:g} {f.unit}, {f.better} "
            "is better; any worsening fails)"
        )
    return (
        f"{f.metric} worse by {f.worsening_points:.2f} points > {max_drop:g} "
        f"({f.baseline:g} → {f.current:g}, {f.better} is better)"
    )


def _declared_figures(record: Mapping[str, Any]) -> dict[str, tuple[FigureInfo, float]]:
    """The record's numbers that are declared figures, keyed by declared name (an alias's leaf replaced by
    the figure it names). When a record holds both a figure and its alias, the figure's own name wins."""
    out: dict[str, tuple[FigureInfo, float]] = {}
    for name, value in _flat_numbers(record).items():
        info = figure_info(name)
        if info is None:
            continue
        prefix, _, leaf = name.rpartition(".")
        declared = f"{prefix}.{info.name}" if prefix else info.name
        if declared in out and leaf != info.name:
            continue
        out[declared] = (info, value)
    return out


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
