"""Compare a current results file with a baseline: the CI gate over stored results.

Runs are matched by :attr:`RunResult.key` (model, backend@device, precision, scenario, batch size,
concurrency, and preprocessing / server rate). For each matched pair, the median and the p99 are compared
as ratios ``current / baseline`` with percentile-bootstrap confidence intervals over the raw samples:
a block bootstrap for one continuous run (bursts of interference cluster in time), a two-stage bootstrap
over rounds for runs measured with ``--rounds`` (so the machine's drift between rounds widens the
interval); see :func:`~infership.bench.stats.bootstrap_ratio`. With ``normalise``, each round's samples
are first divided by the reference workload timed next to it (:mod:`infership.bench.reference`), which
takes the machine's speed at each time out.

The ratios are judged by the rule in :mod:`infership.bench.rule`: a **regression** when the estimate exceeds
``1 + threshold`` and the interval's lower bound exceeds 1, an **improvement** in the mirror case,
**inconclusive** when the run's own spread could not have revealed a slowdown of the threshold's size,
else **ok**; every row states the slowdown it could have detected.

Besides latency, the variant's figures (the run's ``accuracy`` record: re-measured on a validation set with
``bench --validation``, else copied from the manifest) are judged by their declaration (unit and direction,
:mod:`infership.bench.figures_gate`). A server run regresses too when it met its p99 bound in the baseline
and no longer does. A baseline run missing from the current file fails the gate: a gate that passes because
a measurement silently stopped happening is no gate.

Stored results cannot see how far the machine drifted between the two jobs; measuring both sides in one job
(:mod:`infership.bench.ab`, ``infership compare --rerun``) can. Exit codes (:mod:`infership.bench.rule`):
0 no regression, 1 regression or missing run, 2 not comparable (different environment fingerprints unless
forced, no run in common), 3 inconclusive, 4 error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from infership.runtime.errors import InfershipError, InvalidInputError

from .figures_gate import FigureChange, compare_figures, is_gated, regression_reason
from .results import BenchResults, RunResult
from .rule import (
    EXIT_ERROR,
    EXIT_INCONCLUSIVE,
    EXIT_NOT_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    Thresholds,
    Verdict,
    exit_code_for,
    judge_latency,
    verdict_of,
    with_job_drift,
)
from .stats import RatioInterval, bootstrap_ratio

__all__ = [
    "EXIT_ERROR", "EXIT_INCONCLUSIVE", "EXIT_NOT_COMPARABLE", "EXIT_OK", "EXIT_REGRESSION", "Comparison",
    "FigureChange", "NotComparableError", "RunComparison", "Thresholds", "Verdict", "compare_figures",
    "compare_results", "compare_runs", "environment_differences", "is_gated",
]  # fmt: skip

_ENV_FIELDS = (
    "cpu.model",
    "cpu.arch",
    "cpu.logical_cores",
    "cpu.physical_cores",
    "cpu.flags",
    "gpus",
    "libraries",
)


class NotComparableError(InfershipError, ValueError):
    """The two sides cannot be compared (other machine or libraries, no run in common, or different
    backends or variants resolved on the two sides)."""


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
        method: How the ratios were estimated: ``"bootstrap"`` (stored results), ``"paired blocks"``
            (an interleaved A/B run), with ``", normalised"`` when divided by the reference workload.
        pairs: Block pairs measured (A/B runs), else ``None``.
    """

    key: str
    verdict: Verdict
    p50: RatioInterval | None = None
    p99: RatioInterval | None = None
    throughput_ratio: float | None = None
    figures: tuple[FigureChange, ...] = ()
    reasons: tuple[str, ...] = ()
    method: str = "bootstrap"
    pairs: int | None = None

    @property
    def detectable(self) -> float | None:
        """The smallest median slowdown this comparison could have detected (a fraction), if measured."""
        return self.p50.detectable if self.p50 is not None else None

    def to_dict(self) -> dict[str, Any]:
        det = self.detectable
        return {
            "key": self.key,
            "verdict": self.verdict.value,
            "p50": self.p50.to_dict() if self.p50 else None,
            "p99": self.p99.to_dict() if self.p99 else None,
            "detectable_slowdown": None if det is None or det == float("inf") else det,
            "throughput_ratio": self.throughput_ratio,
            "figures": [f.to_dict() for f in self.figures],
            "reasons": list(self.reasons),
            "method": self.method,
            "pairs": self.pairs,
        }


@dataclass(frozen=True)
class Comparison:
    """All run comparisons, with what differed in the environments (when forced).

    Args:
        rows: One per run key.
        thresholds: The tolerances applied.
        forced: Compared across environment fingerprints.
        environment_differences: What differed, when forced.
        mode: ``"stored"`` (two results files) or ``"rerun"`` (both artifacts measured in this job).
        baseline, current: What was compared (file or artifact paths), for the reports.
    """

    rows: tuple[RunComparison, ...]
    thresholds: Thresholds
    forced: bool = False
    environment_differences: tuple[str, ...] = ()
    mode: str = "stored"
    baseline: str = ""
    current: str = ""

    @property
    def failures(self) -> tuple[RunComparison, ...]:
        return tuple(r for r in self.rows if r.verdict.fails)

    @property
    def exit_code(self) -> int:
        """1 on a regression or missing run, else 2 if a row is not comparable, else 3 if a row is
        inconclusive, else 0 (see :func:`~infership.bench.rule.exit_code_for`)."""
        return exit_code_for(r.verdict for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "mode": self.mode,
            "baseline": self.baseline,
            "current": self.current,
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
    normalise: bool = False,
    seed: int = 0,
) -> Comparison:
    """Compare ``current`` with ``baseline`` run by run (the rule is in the module docstring).

    Args:
        baseline: The reference results.
        current: The results to judge.
        thresholds: Tolerances (default :class:`Thresholds`).
        force: Compare even when the environment fingerprints differ (the differences are listed).
        normalise: Divide each round's samples by the reference workload timed next to it, where both runs
            recorded it (``RunResult.reference_ms``); runs without it are compared raw (and say so).
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
            rows.append(
                compare_runs(base[key], cur[key], thresholds=thresholds, normalise=normalise, seed=seed)
            )
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
    baseline: RunResult,
    current: RunResult,
    *,
    thresholds: Thresholds,
    normalise: bool = False,
    seed: int = 0,
) -> RunComparison:
    """Compare two runs of the same key (see the module docstring for the rule)."""
    conf, n = thresholds.confidence, thresholds.n_resamples
    notes: list[str] = []
    a, b = np.asarray(baseline.samples_ms), np.asarray(current.samples_ms)
    method = "bootstrap"
    normalised = False
    if normalise:
        if baseline.reference_ms and current.reference_ms:
            normalised = True
            a, b = normalised_samples(baseline), normalised_samples(current)
            rb, rc = float(np.mean(baseline.reference_ms)), float(np.mean(current.reference_ms))
            method += ", normalised"
            notes.append(
                f"normalised by the reference workload ({rb:.3g} ms then, {rc:.3g} ms now: the machine ran "
                f"{rc / rb - 1:+.1%} {'slower' if rc >= rb else 'faster'} now)"
            )
        else:
            notes.append("not normalised: a run recorded no reference workload")
    common = dict(
        confidence=conf, n_resamples=n, baseline_rounds=baseline.rounds, current_rounds=current.rounds
    )
    p50 = bootstrap_ratio(a, b, percentile=50, seed=seed, **common)
    p99 = bootstrap_ratio(a, b, percentile=99, seed=seed + 1, **common)
    # Two jobs: their samples cannot show how far apart the machine was between them (on a shared runner
    # job-to-job drift dwarfs sampling noise), so the intervals allow for the drift assumed and for the
    # difference the reference workload measured (unless the samples were divided by it already).
    shift = 0.0 if normalised else reference_shift(baseline, current)
    if thresholds.job_drift > 0 or shift > 0:
        p50, p99 = (with_job_drift(r, thresholds.job_drift, shift=shift) for r in (p50, p99))
        allowed = f"intervals allow ±{thresholds.job_drift:.0%} job-to-job drift (--job-drift)"
        if shift > 0:
            allowed += (
                f" and the {math.expm1(shift):.0%} machine-speed difference the reference workload measured"
            )
        notes.append(allowed)
    latency = judge_latency((p50, p99), thresholds)
    worse = list(latency.worse)
    figures = tuple(
        compare_figures(baseline.accuracy, current.accuracy, max_drop=thresholds.max_accuracy_drop)
    )
    worse += [regression_reason(f, thresholds.max_accuracy_drop) for f in figures if f.regression]
    notes += [
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
    verdict = verdict_of(worse=worse, better=latency.better, undecided=latency.undecided)
    tput = current.throughput / baseline.throughput if baseline.throughput > 0 else None
    reasons = (*worse, *latency.better, *latency.undecided, *latency.unvouched, *notes)
    return RunComparison(baseline.key, verdict, p50, p99, tput, figures, reasons, method)


def reference_shift(baseline: RunResult, current: RunResult) -> float:
    """How far apart the machine's speed was in the two jobs, by the reference workload timed in each:
    ``|log(mean reference now / mean reference then)|``; 0 when a run did not record it."""
    if not baseline.reference_ms or not current.reference_ms:
        return 0.0
    then, now = float(np.mean(baseline.reference_ms)), float(np.mean(current.reference_ms))
    return abs(math.log(now / then)) if then > 0 and now > 0 else 0.0


def normalised_samples(run: RunResult) -> np.ndarray:
    """The run's samples, each round divided by the reference workload timed next to it (unitless).

    Raises:
        InvalidInputError: The run recorded no reference workload.
    """
    if not run.reference_ms:
        raise InvalidInputError(f"run {run.key} recorded no reference workload")
    parts = run.round_samples
    return np.concatenate([np.asarray(p) / ref for p, ref in zip(parts, run.reference_ms, strict=True)])


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
