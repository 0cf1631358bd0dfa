"""The decision rule: regression / improvement / inconclusive / ok, the detectable slowdown every verdict
states, exit-code precedence, a baseline's stored spread, and normalisation by the reference workload."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from infership.bench.compare import compare_results
from infership.bench.reference import reference_ms
from infership.bench.results import BenchResults, RunResult
from infership.bench.rule import (
    DEFAULT_JOB_DRIFT,
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
from infership.bench.stats import RatioInterval

from tests.bench.conftest import lognormal, synthetic_results, synthetic_run

#: Statistics of samples alone, as if both sides came from one job (no job-to-job drift allowed for).
ONE_JOB = Thresholds(job_drift=0)


def _ratio(est: float, lo: float, hi: float, stat: str = "p50") -> RatioInterval:
    return RatioInterval(stat, est, lo, hi, 0.95)


def _verdict(*ratios: RatioInterval, **kw: float) -> Verdict:
    j = judge_latency(ratios, Thresholds(**kw))
    return verdict_of(worse=j.worse, better=j.better, undecided=j.undecided)


def test_the_four_outcomes_of_one_ratio() -> None:
    assert _verdict(_ratio(1.20, 1.10, 1.30)) is Verdict.REGRESSION  # beyond 10 %, interval above 1
    assert _verdict(_ratio(0.80, 0.70, 0.90)) is Verdict.IMPROVEMENT
    assert _verdict(_ratio(1.02, 0.98, 1.06)) is Verdict.OK  # could have seen 4 %: below the threshold
    assert _verdict(_ratio(1.02, 0.80, 1.30)) is Verdict.INCONCLUSIVE  # could only see 27.5 %
    assert _verdict(_ratio(1.15, 0.95, 1.40)) is Verdict.INCONCLUSIVE  # large but not significant
    assert _verdict(_ratio(1.05, 1.02, 1.08)) is Verdict.OK  # significant but within the threshold


def test_detectable_slowdown_is_the_distance_to_the_lower_bound() -> None:
    assert _ratio(1.0, 0.8, 1.25).detectable == pytest.approx(0.25)
    assert _ratio(1.0, 0.0, 2.0).detectable == math.inf
    assert _ratio(1.0, 0.8, 1.25).to_dict()["detectable"] == pytest.approx(0.25)
    j = judge_latency([_ratio(1.0, 0.95, 1.05)], Thresholds())
    assert j.resolution == ("p50: detectable slowdown 5.3%",)


def test_a_noisy_tail_is_said_but_only_the_median_decides_inconclusive() -> None:
    j = judge_latency([_ratio(1.0, 0.97, 1.03), _ratio(1.1, 0.5, 2.0, "p99")], Thresholds())
    assert j.undecided == () and "p99 +10.0%: this run could only detect" in j.unvouched[0]
    assert verdict_of(worse=j.worse, better=j.better, undecided=j.undecided) is Verdict.OK
    # a tail regression that is significant still fails
    assert _verdict(_ratio(1.0, 0.97, 1.03), _ratio(2.0, 1.5, 2.5, "p99")) is Verdict.REGRESSION
    assert _verdict(_ratio(1.0, 0.97, 1.03), _ratio(2.0, 1.5, 2.5, "p99"), max_p99_slowdown=float("inf")) is (
        Verdict.OK
    )


def test_exit_code_precedence() -> None:
    assert exit_code_for([Verdict.OK, Verdict.NEW, Verdict.IMPROVEMENT]) == EXIT_OK
    assert exit_code_for([Verdict.OK, Verdict.INCONCLUSIVE]) == EXIT_INCONCLUSIVE
    assert exit_code_for([Verdict.INCONCLUSIVE, Verdict.NOT_COMPARABLE]) == EXIT_NOT_COMPARABLE
    assert exit_code_for([Verdict.NOT_COMPARABLE, Verdict.REGRESSION]) == EXIT_REGRESSION
    assert exit_code_for([Verdict.MISSING]) == EXIT_REGRESSION


def test_stored_compare_says_inconclusive_when_its_own_spread_is_too_large() -> None:
    """Twelve samples a side: a 10 % slowdown could not be told from none, so no verdict either way."""
    c = compare_results(
        synthetic_results(synthetic_run(lognormal(12, seed=1))),
        synthetic_results(synthetic_run(lognormal(12, seed=2))),
        thresholds=ONE_JOB,
    )
    row = c.rows[0]
    assert row.verdict is Verdict.INCONCLUSIVE and c.exit_code == EXIT_INCONCLUSIVE
    assert row.detectable is not None and row.detectable > 0.10
    assert "could only detect a slowdown of" in row.reasons[0]
    assert c.to_dict()["rows"][0]["detectable_slowdown"] == pytest.approx(row.detectable)
    # the same with enough samples is decided
    big = compare_results(
        synthetic_results(synthetic_run(lognormal(3000, seed=1))),
        synthetic_results(synthetic_run(lognormal(3000, seed=2))),
        thresholds=ONE_JOB,
    )
    assert big.exit_code == EXIT_OK and big.rows[0].detectable < 0.10  # type: ignore[operator]


def test_stored_results_allow_for_job_to_job_drift() -> None:
    """Two jobs whose machine sat 12 % apart: precise samples alone call it a regression; the default
    allowance for job-to-job drift (samples from one job cannot show it) makes it undecidable instead, and a
    real 2× slowdown still fails."""
    base = synthetic_results(synthetic_run(lognormal(3000, seed=1)))
    shifted = synthetic_results(synthetic_run(lognormal(3000, seed=2, scale=1.12)))
    assert compare_results(base, shifted, thresholds=ONE_JOB).exit_code == EXIT_REGRESSION
    c = compare_results(base, shifted)
    assert Thresholds().job_drift == DEFAULT_JOB_DRIFT > 0
    assert c.exit_code == EXIT_INCONCLUSIVE and c.rows[0].detectable > 0.2  # type: ignore[operator]
    assert any("job-to-job drift" in r for r in c.rows[0].reasons)
    doubled = synthetic_results(synthetic_run(lognormal(3000, seed=2, scale=2.0)))
    assert compare_results(base, doubled).exit_code == EXIT_REGRESSION
    widened = with_job_drift(_ratio(1.0, 0.99, 1.01), 0.10)
    assert widened.estimate == 1.0 and widened.low < 0.80 and widened.high > 1.25
    assert with_job_drift(_ratio(1.0, 0.99, 1.01), 0.0) == _ratio(1.0, 0.99, 1.01)


def _rounds_run(levels: list[float], *, seed: int, slowdown: float = 0.0) -> RunResult:
    """Three rounds whose machine speed differs (``levels``); the reference workload saw the same speed."""
    rng = np.random.default_rng(seed)
    parts = [lv * (1 + slowdown) * rng.lognormal(0, 0.05, 400) for lv in levels]
    run = synthetic_run(np.concatenate(parts))
    return dataclasses.replace(run, rounds=(400, 400, 400), reference_ms=tuple(0.5 * lv for lv in levels))


def test_normalising_by_the_reference_takes_the_machine_speed_out() -> None:
    """The current job ran on a machine 30 % slower throughout (the reference workload says so): compared raw,
    the gate allows for the measured difference and cannot decide; normalised by the reference timed next to
    each round, it is no regression, while a real 20 % slowdown still is."""
    base = synthetic_results(_rounds_run([1.0, 1.02, 0.98], seed=1))
    slow_machine = synthetic_results(_rounds_run([1.3, 1.32, 1.28], seed=2))
    raw = compare_results(base, slow_machine, thresholds=ONE_JOB)
    assert raw.exit_code == EXIT_INCONCLUSIVE
    assert "the 30% machine-speed difference the reference workload measured" in "; ".join(
        raw.rows[0].reasons
    )
    unreferenced = synthetic_results(dataclasses.replace(slow_machine.runs[0], reference_ms=()))
    assert compare_results(base, unreferenced, thresholds=ONE_JOB).exit_code == EXIT_REGRESSION
    normalised = compare_results(base, slow_machine, normalise=True, thresholds=ONE_JOB)
    assert normalised.exit_code == EXIT_OK and normalised.rows[0].method == "bootstrap, normalised"
    assert "the machine ran +30.0% slower now" in "; ".join(normalised.rows[0].reasons)
    real = synthetic_results(_rounds_run([1.3, 1.32, 1.28], seed=3, slowdown=0.2))
    assert compare_results(base, real, normalise=True, thresholds=ONE_JOB).exit_code == EXIT_REGRESSION
    # without a reference on one side it compares raw, and says so
    plain = synthetic_results(dataclasses.replace(slow_machine.runs[0], reference_ms=()))
    assert "not normalised" in "; ".join(compare_results(base, plain, normalise=True).rows[0].reasons)


def test_results_store_their_spread_and_reference(tmp_path) -> None:
    from infership.bench.results import load_results, save_results

    run = _rounds_run([1.0, 1.1, 0.9], seed=4)
    path = save_results(BenchResults(runs=(run,), environment={}, fingerprint="x"), tmp_path / "r.json")
    loaded = load_results(path).runs[0]
    assert loaded.reference_ms == pytest.approx(run.reference_ms, abs=1e-4)
    spread = loaded.to_dict()["spread"]
    assert spread["parts"] == "rounds" and len(spread["medians_ms"]) == 3
    assert spread["max_deviation"] == pytest.approx(0.1, abs=0.02)
    continuous = synthetic_run(lognormal(500, seed=5)).spread
    assert continuous["parts"] == "5 consecutive parts" and len(continuous["medians_ms"]) == 5


def test_the_reference_workload_times_something() -> None:
    assert 0 < reference_ms(calls=3) < 1000
