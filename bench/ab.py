"""A/B in one job: measure a baseline artifact and a candidate artifact interleaved, block by block, and
judge the candidate from the paired block differences (``infership compare --rerun BASELINE CANDIDATE``).

A stored baseline carries the machine state of the job that measured it; on a shared runner two jobs can
differ by more than the regression a gate is meant to catch. Here both predictors are loaded side by side
and measured in alternating blocks (``AB BA AB BA…``, counterbalanced so neither side always goes first),
each block preceded by a short rest so the worker threads one runtime leaves spinning after its calls do not
steal the cores from the other's block, and a couple of untimed calls. Drift slower than a block pair hits
both sides of the pair alike and cancels out of its ratio; the median verdict comes from the pairs'
log ratios (:func:`~infership.bench.paired.paired_median_ratio`), the p99 one from a bootstrap over pairs.

The run measures ``duration_s`` per side at least, then extends itself, a few pairs at a time, while a gated
statistic's *detectable slowdown* (what its own spread lets it see) is above its threshold, up to
``max_duration_s`` per side; if it is still too noisy then, the verdict is **inconclusive** (exit 3), not a
guess. It stops on precision only, never because the answer looks like a regression (stopping on the answer
would inflate false alarms).

Each planned run (backend × precision × scenario × batch × concurrency) is compared separately. The two sides
are matched by what they actually resolved to: if ``auto`` (or a fallback) picked a different backend, variant
or device for the baseline than for the candidate, the row is **not comparable** (exit 2).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from infership.runtime import hardware
from infership.runtime.artifact import Artifact
from infership.runtime.errors import ArtifactError, BackendUnavailable, InvalidInputError
from infership.runtime.predictor import Predictor

from .compare import Comparison, RunComparison
from .config import BenchConfig, PlannedRun, load_precision, plan_runs, resolve_concurrency
from .figures_gate import compare_figures, regression_reason
from .harness import applies_hint, load_options
from .inputs import InputPool
from .paired import MIN_PAIRS, paired_median_ratio, paired_percentile_ratio
from .results import BenchResults, RunResult, SkippedRun
from .rule import DECIDING, LatencyJudgement, Thresholds, Verdict, judge_latency, verdict_of
from .runner import make_pool, result_from_measurement
from .scenarios import Measurement, Scenario, StopRule, merge_rounds, run_scenario
from .stats import RatioInterval

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, description)``: called after each block pair (``done``/``total`` count pairs of
the current run against its planned minimum, growing when the run extends)."""


@dataclass(frozen=True, kw_only=True)
class ABConfig:
    """What an A/B run measures. Every field is keyword-only.

    Args:
        baseline: The baseline artifact (directory or ``.onnx``).
        sweep: The runs to compare, as for ``infership bench``; ``sweep.artifact`` is the candidate.
            ``duration_s`` is the least measured per side and run; ``max_duration_s`` the budget per side
            and run (default: 4× ``duration_s``) within which the run extends itself while too noisy to
            decide. ``rounds`` and ``measure_overhead`` do not apply (blocks replace rounds).
        block_s: Length of one block (both sides measure blocks of this length, alternately).
        rest_s: Pause before every block.
        block_warmup: Untimed calls at the start of every block (the first call after a rest is slow).
        min_block_queries: Queries per block at least, whatever ``block_s`` (a block's median needs a few).
        confirm: Measure a regression again on fresh loads (as many pairs again) and judge all the pairs
            before reporting it.
        validation: A validation set (:func:`infership.calibration.from_spec`) both sides are run on; the
            candidate's outputs are judged against the baseline's by the task (see
            :mod:`infership.bench.validation`).

    Raises:
        InvalidInputError: A non-positive block length, a negative rest or warm-up, or a sweep without a
            duration.
    """

    baseline: str | os.PathLike[str]
    sweep: BenchConfig
    block_s: float = 0.5
    rest_s: float = 0.1
    block_warmup: int = 2
    min_block_queries: int = 10
    validation: str | None = None
    confirm: bool = True

    def __post_init__(self) -> None:
        if self.block_s <= 0 or self.rest_s < 0 or self.block_warmup < 0 or self.min_block_queries < 1:
            raise InvalidInputError(
                "A/B blocks need block_s > 0, rest_s >= 0, block_warmup >= 0 and min_block_queries >= 1; got "
                f"{self.block_s}, {self.rest_s}, {self.block_warmup}, {self.min_block_queries}"
            )
        if self.sweep.duration_s is None:
            raise InvalidInputError("an A/B run needs a duration per side (duration_s)")

    @property
    def budget_s(self) -> float:
        """Seconds measured per side and run at most."""
        d = float(self.sweep.duration_s or 0.0)
        return self.sweep.max_duration_s if self.sweep.max_duration_s is not None else 4 * d

    @property
    def min_pairs(self) -> int:
        """Block pairs measured before the run may stop (even, so the AB/BA orders balance)."""
        n = max(MIN_PAIRS, math.ceil(float(self.sweep.duration_s or 0.0) / self.block_s))
        return n + n % 2


@dataclass(frozen=True)
class ABOutcome:
    """An A/B run: the comparison, and each side's runs (samples in block order, ``rounds`` = block sizes)."""

    comparison: Comparison
    baseline: BenchResults
    candidate: BenchResults


def run_ab(
    config: ABConfig, *, thresholds: Thresholds | None = None, progress: Progress | None = None
) -> ABOutcome:
    """Measure baseline and candidate interleaved and judge every planned run (module docstring).

    Args:
        config: What to measure.
        thresholds: Tolerances (default :class:`~infership.bench.rule.Thresholds`).
        progress: Called after every block pair.

    Returns:
        The :class:`ABOutcome`; ``outcome.comparison.exit_code`` is what a CI job should exit with.

    Raises:
        ArtifactError: An artifact cannot be opened.
        InvalidInputError: Inputs, shapes or a validation set that do not fit a model, or no run could load.
    """
    from infership import __version__

    thresholds = thresholds or Thresholds()
    sweep = config.sweep
    base_art, cand_art = Artifact.load(config.baseline), Artifact.load(sweep.artifact)
    rows: list[RunComparison] = []
    skipped: list[SkippedRun] = []
    base_runs: list[RunResult] = []
    cand_runs: list[RunResult] = []
    planned = plan_runs(sweep)
    for index, p in enumerate(planned):
        outcome = _compare_planned(
            config, p, base_art, cand_art, thresholds, progress, f"{index + 1}/{len(planned)}"
        )
        if isinstance(outcome, SkippedRun):
            skipped.append(outcome)
            continue
        row, runs = outcome
        rows.append(row)
        if runs is not None:
            base_runs.append(runs[0])
            cand_runs.append(runs[1])
    if not rows:
        reasons = "; ".join(f"{s.backend} {s.precision}: {s.reason}" for s in skipped)
        raise InvalidInputError(f"no run could load on both sides: {reasons}")
    env = hardware.environment()

    def results(runs: list[RunResult]) -> BenchResults:
        return BenchResults(
            runs=tuple(runs), environment=env, fingerprint=hardware.fingerprint(env), skipped=tuple(skipped),
            config={**sweep.to_dict(), "ab": {"block_s": config.block_s, "rest_s": config.rest_s}},
            infership=__version__,
        )  # fmt: skip

    comparison = Comparison(
        tuple(rows),
        thresholds,
        mode="rerun",
        baseline=os.fspath(config.baseline),
        current=os.fspath(sweep.artifact),
    )
    return ABOutcome(comparison, results(base_runs), results(cand_runs))


def _compare_planned(
    config: ABConfig,
    p: PlannedRun,
    base_art: Artifact,
    cand_art: Artifact,
    thresholds: Thresholds,
    progress: Progress | None,
    label: str,
) -> SkippedRun | tuple[RunComparison, tuple[RunResult, RunResult] | None]:
    sweep = config.sweep
    options = load_options(sweep, sweep.hint or p.hint)
    if not applies_hint(p.backend):
        del options["hint"]
    with ExitStack() as stack:
        loaded: list[Predictor | None] = []
        errors: list[str] = []
        for art in (base_art, cand_art):
            try:
                pred = Predictor.load(
                    art, backend=p.backend, precision=load_precision(p.precision), **options
                )
            except (BackendUnavailable, ArtifactError) as exc:
                loaded.append(None)
                errors.append(str(exc))
                continue
            stack.enter_context(pred)
            loaded.append(pred)
            errors.append("")
        base, cand = loaded
        if base is not None or cand is not None:
            p = resolve_concurrency(p, base or cand)  # both sides run the baseline's number of callers
        key = _key(p, cand or base)
        if base is None and cand is None:
            return SkippedRun(p.backend, p.precision, f"{p.describe()}: {errors[1]}")
        if cand is None:
            return RunComparison(
                key, Verdict.MISSING, reasons=(f"the candidate could not load: {errors[1]}",)
            ), None
        if base is None:
            return RunComparison(
                key, Verdict.NEW, reasons=(f"the baseline could not load: {errors[0]}",)
            ), None
        mismatch = _mismatch(base, cand)
        if mismatch:
            return RunComparison(key, Verdict.NOT_COMPARABLE, reasons=(mismatch,)), None
        records = _validation_records(config, base, cand)
        pools = [_pool(pred, sweep, p) for pred in (base, cand)]
        parts, pairs_note = _measure_pairs(config, p, (base, cand), pools, thresholds, progress, label)
    row = _judge(parts, thresholds, records, pairs_note)
    if config.confirm and row.verdict is Verdict.REGRESSION:
        # A regression is measured again on fresh loads before it is reported, and judged on all the pairs:
        # a stretch of interference that favoured one side (or one load's unlucky memory placement) is
        # diluted by the fresh pairs, while a real slowdown shows in both.
        with ExitStack() as stack:
            fresh = [stack.enter_context(Predictor.load(a, backend=p.backend, precision=load_precision(p.precision), **options))
                     for a in (base_art, cand_art)]  # fmt: skip
            more, _ = _measure_pairs(config, p, (fresh[0], fresh[1]), pools, thresholds, progress, label,
                                     pairs=len(parts[0]))  # fmt: skip
        first = row
        parts = [parts[0] + more[0], parts[1] + more[1]]
        note = f"{pairs_note}, then {len(more[0])} more on fresh loads to confirm a regression"
        row = _judge(parts, thresholds, records, note)
        if row.verdict is not Verdict.REGRESSION:
            assert first.p50 is not None
            row = replace(row, reasons=(*row.reasons, f"a first measurement suggested p50 {first.p50.estimate - 1:+.1%}; "
                                        "fresh loads did not confirm it"))  # fmt: skip
    runs = tuple(
        _result(pred, parts[i], p, pools[i], sweep, options, records[i] if records else None)
        for i, pred in enumerate((base, cand))
    )
    base_srv, cand_srv = runs[0].server, runs[1].server
    if base_srv and cand_srv and base_srv.bound_met and cand_srv.bound_met is False:
        lost = f"p99 bound {cand_srv.latency_bound_ms:g} ms met by the baseline, missed by the candidate"
        row = replace(row, verdict=Verdict.REGRESSION, reasons=(lost, *row.reasons))
    return replace(row, key=runs[1].key), (runs[0], runs[1])


def _key(p: PlannedRun, pred: Predictor | None) -> str:
    model = pred.manifest.name if pred is not None else "?"
    backend = pred.backend if pred is not None else p.backend
    device = pred.placement.device if pred is not None else "?"
    precision = pred.variant.precision if pred is not None else p.precision
    key = f"{model}/{backend}@{device}/{precision}/{p.scenario.value}/b{p.batch_size}/c{p.concurrency}"
    return key + (f"/{p.tokens.describe().replace(' ', '/')}" if p.tokens is not None else "")


def _mismatch(base: Predictor, cand: Predictor) -> str:
    """Why the two sides are not the same kind of run, or ``""``."""
    a = (base.backend, base.variant.id, base.placement.device)
    b = (cand.backend, cand.variant.id, cand.placement.device)
    if a == b:
        return ""
    return (
        f"the sides resolved differently: baseline {a[0]} variant {a[1]} on {a[2]}, candidate {b[0]} variant "
        f"{b[1]} on {b[2]}; name the backend (--backend) and precision so both run the same way"
    )


def _pool(pred: Predictor, sweep: BenchConfig, p: PlannedRun) -> InputPool:
    tokens = p.tokens  # text encoders: the run's shape bucket (sequence length or replay, padding)
    return make_pool(
        pred, batch_size=p.batch_size, size=sweep.pool_size, seed=sweep.seed, shapes=sweep.shapes,
        inputs=sweep.inputs, include_preprocessing=sweep.include_preprocessing, image_size=sweep.image_size,
        sequence=tokens.sequence if tokens else None,
        replay=sweep.replay if tokens and tokens.sequence is None else None,
        padding=tokens.padding if tokens else "longest",
    )  # fmt: skip


def _validation_records(
    config: ABConfig, base: Predictor, cand: Predictor
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if config.validation is None:
        return None
    from .validation import paired_records, run_validation

    vb, vc = run_validation(base, config.validation), run_validation(cand, config.validation)
    return paired_records(vb, vc, task=base.manifest.task)


def _measure_pairs(
    config: ABConfig,
    p: PlannedRun,
    preds: tuple[Predictor, Predictor],
    pools: list[InputPool],
    thresholds: Thresholds,
    progress: Progress | None,
    label: str,
    *,
    pairs: int | None = None,
) -> tuple[list[list[Measurement]], str]:
    """Warm both sides up, then measure block pairs until precise enough or out of budget (or exactly
    ``pairs`` of them)."""
    sweep = config.sweep
    warm_s = max(sweep.effective_warmup_s, config.block_s)
    warm = [
        _block(config, p, preds[i], pools[i], StopRule(duration_s=warm_s, max_duration_s=warm_s,
               min_queries=max(1, sweep.warmup_queries)), sweep.target_qps, 0)
        for i in (0, 1)
    ]  # fmt: skip
    # One arrival rate for both sides of a server run: the baseline's warm-up throughput, halved.
    rate = sweep.target_qps
    if p.scenario is Scenario.SERVER and rate is None:
        rate = max(warm[0].queries / max(warm[0].wall_s, 1e-9) / 2, 1e-3)
    stop = StopRule(
        duration_s=config.block_s, max_duration_s=config.block_s, min_queries=config.min_block_queries
    )
    parts: list[list[Measurement]] = [[], []]
    used = [0.0, 0.0]
    target = pairs if pairs is not None else config.min_pairs
    while True:
        while len(parts[0]) < target:
            i = len(parts[0])
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                m = _block(config, p, preds[side], pools[side], stop, rate, sweep.seed + i)
                parts[side].append(m)
                used[side] += m.wall_s
            if progress:
                progress(i + 1, target, f"run {label} {p.describe()}: pair {i + 1}/{target}")
        p50 = paired_median_ratio(
            [m.latencies_ms for m in parts[0]],
            [m.latencies_ms for m in parts[1]],
            confidence=thresholds.confidence,
        )
        grow = more_pairs(p50, thresholds, pairs=len(parts[0]), used_s=max(used), budget_s=config.budget_s)
        if grow == 0 or pairs is not None:
            note = f"{len(parts[0])} block pairs"
            if p50.detectable > thresholds.limit(DECIDING):
                note += f" (the budget of {config.budget_s:g} s per side ran out)"
            return parts, note
        log.info(
            "%s: median detectable slowdown %s > threshold after %d pairs; measuring %d more",
            p.describe(), f"{p50.detectable:.1%}", target, grow,
        )  # fmt: skip
        target += grow


def more_pairs(
    p50: RatioInterval, thresholds: Thresholds, *, pairs: int, used_s: float, budget_s: float
) -> int:
    """How many block pairs an A/B run measures next: 0 once the median's detectable slowdown is within its
    threshold (it stops on precision only, never on what the estimate says: stopping when the answer looks
    like a regression would inflate false alarms) or the budget is spent; else a quarter more (at least 2,
    an even number so the AB/BA orders stay balanced), as many as the budget leaves room for.

    Args:
        p50: The paired median ratio so far.
        thresholds: The tolerances.
        pairs: Pairs measured so far.
        used_s: Seconds measured so far by the side that took longer.
        budget_s: Seconds per side at most.
    """
    if p50.detectable <= thresholds.limit(DECIDING) or used_s >= budget_s or pairs < 1:
        return 0
    room = int((budget_s - used_s) / max(used_s / pairs, 1e-9))
    grow = max(2, min(pairs // 4, room))
    return grow + grow % 2


def judge_pairs(
    baseline_blocks: list[Any], candidate_blocks: list[Any], thresholds: Thresholds, *, seed: int = 0
) -> tuple[RatioInterval, RatioInterval, LatencyJudgement]:
    """The paired median and p99 ratios of an A/B run's blocks and the rule's judgement of them."""
    p50 = paired_median_ratio(baseline_blocks, candidate_blocks, confidence=thresholds.confidence)
    p99 = paired_percentile_ratio(
        baseline_blocks, candidate_blocks, confidence=thresholds.confidence, n_resamples=thresholds.n_resamples,
        seed=seed,
    )  # fmt: skip
    return p50, p99, judge_latency((p50, p99), thresholds)


def _block(
    config: ABConfig,
    p: PlannedRun,
    pred: Predictor,
    pool: InputPool,
    stop: StopRule,
    rate: float | None,
    seed: int,
) -> Measurement:
    time.sleep(config.rest_s)
    return run_scenario(
        p.scenario, pred.predict, pool, batch_size=p.batch_size, concurrency=p.concurrency, stop=stop,
        warmup_queries=config.block_warmup, warmup_s=0.0, target_qps=rate, seed=seed,
    )  # fmt: skip


def _result(
    pred: Predictor,
    parts: list[Measurement],
    p: PlannedRun,
    pool: InputPool,
    sweep: BenchConfig,
    options: dict[str, Any],
    record: dict[str, Any] | None,
) -> RunResult:
    m = merge_rounds(parts, tolerance=sweep.stability_tolerance)
    run = result_from_measurement(
        pred, m, scenario=p.scenario, batch_size=p.batch_size, concurrency=p.concurrency, pool=pool,
        target_qps=sweep.target_qps, latency_bound_ms=sweep.latency_bound_ms, cold_start=None,
        load_options=options,
    )  # fmt: skip
    return replace(run, accuracy=record) if record is not None else run


def _judge(
    parts: list[list[Measurement]],
    thresholds: Thresholds,
    records: tuple[dict[str, Any], dict[str, Any]] | None,
    pairs_note: str,
) -> RunComparison:
    p50, p99, latency = judge_pairs(
        [m.latencies_ms for m in parts[0]], [m.latencies_ms for m in parts[1]], thresholds
    )
    worse = list(latency.worse)
    figures = ()
    if records is not None:
        figures = tuple(compare_figures(records[0], records[1], max_drop=thresholds.max_accuracy_drop))
        worse += [regression_reason(f, thresholds.max_accuracy_drop) for f in figures if f.regression]
    notes = [f"measured interleaved: {pairs_note}"]
    if records is None:
        notes.append("accuracy not measured (give a validation set)")
    verdict = verdict_of(worse=worse, better=latency.better, undecided=latency.undecided)
    items = [sum(m.items for m in side) / max(sum(m.wall_s for m in side), 1e-9) for side in parts]
    tput = items[1] / items[0] if items[0] > 0 else None
    reasons = (*worse, *latency.better, *latency.undecided, *latency.unvouched, *notes)
    return RunComparison("", verdict, p50, p99, tput, figures, reasons, "paired blocks", len(parts[0]))
