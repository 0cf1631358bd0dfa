"""The gate judges every figure of a variant's validation record by its declaration (unit + direction in
``infership.runtime.figures``), never by its name or value range: ``accuracy_drop`` (lower is better) is
gated the right way round, any rise of ``nonfinite`` fails, and names earlier versions wrote
(``accuracy_int8``) are read as the figure they name."""

from __future__ import annotations

from pathlib import Path

import pytest
from infership.bench.compare import Thresholds, Verdict, compare_results, is_gated
from infership.bench.results import save_results
from infership.runtime.figures import ALIASES, FIGURES, Better, FigureInfo, Unit

from infership.cli import main
from tests.bench.conftest import lognormal, synthetic_results, synthetic_run

#: One job: the latencies are identical, and only the figure can decide.
SAME_JOB = Thresholds(job_drift=0)
#: Worse / better by this many points for quality figures: beyond the default 1-point tolerance.
STEP_POINTS = 5.0
#: A representative baseline value per unit (inside the unit's range, so a step either way stays inside).
BASE = {
    Unit.FRACTION: 0.5,
    Unit.PERCENT: 50.0,
    Unit.POINTS: 10.0,
    Unit.DB: 40.0,
    Unit.COSINE: 0.5,
    Unit.ABSOLUTE: 1.0,
    Unit.RATIO: 2.0,
    Unit.COUNT: 10.0,
    Unit.MS: 10.0,
    Unit.PER_SECOND: 100.0,
}


def _step(info: FigureInfo) -> float:
    """A change of the figure's value that is beyond the default tolerance for quality figures."""
    per_unit = info.unit.points_per_unit
    return STEP_POINTS / per_unit if per_unit is not None else 0.25 * BASE[info.unit]


def _moved(info: FigureInfo, *, worse: bool) -> float:
    up = (info.better is Better.LOWER) == worse  # lower-is-better figures get worse going up
    return BASE[info.unit] + (_step(info) if up else -_step(info))


def _gate(name: str, baseline: float, current: float, **thresholds: float):
    # Identical latencies, enough of them for the p99 to be decided too: only the figure can decide.
    samples = lognormal(2000, seed=1)
    return compare_results(
        synthetic_results(synthetic_run(samples, accuracy={name: baseline})),
        synthetic_results(synthetic_run(samples, accuracy={name: current})),
        thresholds=Thresholds(**{"job_drift": 0, **thresholds}),  # one job: only the figure can decide
    )


def _quality(info: FigureInfo) -> bool:
    return info.unit.points_per_unit is not None and info.better is not Better.NEITHER


def _count(info: FigureInfo) -> bool:
    """A count with a direction: any worsening is a regression."""
    return info.unit is Unit.COUNT and info.better is not Better.NEITHER


def test_every_declaration_is_covered_by_the_cases_below() -> None:
    assert set(BASE) == set(Unit), "a new unit needs a representative value here"
    assert {"accuracy", "accuracy_drop", "loss_points", "top1_agreement", "top5_containment"} <= {
        n for n, i in FIGURES.items() if _quality(i)
    }
    assert {n for n, i in FIGURES.items() if _count(i)} == {"nonfinite"}
    assert {n for n, i in FIGURES.items() if is_gated(i)} == {
        n for n, i in FIGURES.items() if _quality(i) or _count(i)
    }


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_worse_figure_is_a_regression_when_it_is_a_quality_figure(name: str) -> None:
    info = FIGURES[name]
    c = _gate(name, BASE[info.unit], _moved(info, worse=True))
    (fig,) = c.rows[0].figures
    assert (fig.metric, fig.unit, fig.better) == (name, info.unit.value, info.better.value)
    if info.better is Better.NEITHER:
        assert fig.change == "unchanged" and not fig.gated and c.exit_code == 0
    elif _quality(info):
        assert fig.change == "worse" and fig.gated
        assert fig.worsening_points == pytest.approx(STEP_POINTS)
        assert c.exit_code == 1 and c.rows[0].verdict is Verdict.REGRESSION
        assert any(r.startswith(f"{name} worse by 5.00 points") for r in c.rows[0].reasons)
    elif _count(info):
        assert fig.change == "worse" and fig.gated and fig.worsening_points is None
        assert c.exit_code == 1 and c.rows[0].verdict is Verdict.REGRESSION
        assert any(r.startswith(f"{name} worse by 2.5 (") for r in c.rows[0].reasons)
    else:  # reported with its direction, not gated by points
        assert fig.change == "worse" and not fig.gated and fig.worsening_points is None
        assert c.exit_code == 0
        assert any(r.startswith(f"{name} worse:") and "not gated" in r for r in c.rows[0].reasons)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_better_figure_is_never_a_regression(name: str) -> None:
    info = FIGURES[name]
    c = _gate(name, BASE[info.unit], _moved(info, worse=False))
    (fig,) = c.rows[0].figures
    assert c.exit_code == 0 and not fig.regression
    assert fig.change == ("unchanged" if info.better is Better.NEITHER else "better")
    if _quality(info):
        assert fig.worsening_points == pytest.approx(-STEP_POINTS)


@pytest.mark.parametrize("name", sorted(n for n, i in FIGURES.items() if _quality(i)))
def test_quality_figures_are_gated_against_the_tolerated_points(name: str) -> None:
    info = FIGURES[name]
    worse = _moved(info, worse=True)
    assert _gate(name, BASE[info.unit], worse, max_accuracy_drop=STEP_POINTS + 0.5).exit_code == 0
    assert _gate(name, BASE[info.unit], worse, max_accuracy_drop=STEP_POINTS - 0.5).exit_code == 1


@pytest.mark.parametrize("name", sorted(n for n, i in FIGURES.items() if _count(i)))
def test_a_count_with_a_direction_fails_on_any_worsening_whatever_the_tolerance(name: str) -> None:
    info = FIGURES[name]
    first, second = (0.0, 1.0) if info.better is Better.LOWER else (1.0, 0.0)
    c = _gate(name, first, second, max_accuracy_drop=100.0)  # a points tolerance does not apply
    (fig,) = c.rows[0].figures
    assert fig.regression and c.exit_code == 1
    assert c.rows[0].reasons == (f"{name} worse by 1 ({first:g} → {second:g} count, {info.better.value} is "
                                 "better; any worsening fails)",)  # fmt: skip
    assert _gate(name, second, first).exit_code == 0 and _gate(name, first, first).exit_code == 0


def test_a_variant_that_starts_producing_nan_fails_the_gate() -> None:
    good = {**GOOD, "nonfinite": 0}
    nan = {**GOOD, "nonfinite": 3}  # every other figure unchanged: only the NaN count can fail it
    c = compare_results(
        synthetic_results(synthetic_run(lognormal(200, seed=1), accuracy=good)),
        synthetic_results(synthetic_run(lognormal(200, seed=1), accuracy=nan)),
        thresholds=SAME_JOB,
    )
    assert c.exit_code == 1 and [f.metric for f in c.rows[0].figures if f.regression] == ["nonfinite"]


@pytest.mark.parametrize(("old", "name"), sorted(ALIASES.items()))
def test_a_baseline_written_under_an_earlier_name_is_compared_with_the_figure(old: str, name: str) -> None:
    samples = lognormal(200, seed=1)
    c = compare_results(
        synthetic_results(synthetic_run(samples, accuracy={old: 99.0, "outputs": {"y": {old: 99.0}}})),
        synthetic_results(synthetic_run(samples, accuracy={name: 90.0, "outputs": {"y": {name: 90.0}}})),
        thresholds=SAME_JOB,
    )
    assert [(f.metric, f.baseline, f.current) for f in c.rows[0].figures] == [
        (name, 99.0, 90.0),
        (f"outputs.y.{name}", 99.0, 90.0),
    ]
    assert c.exit_code == 1 and all(f.regression for f in c.rows[0].figures)


def test_a_record_holding_a_figure_and_its_earlier_name_is_read_by_the_figure() -> None:
    samples = lognormal(200, seed=1)
    c = compare_results(  # the stale alias value (10) must not stand in for the figure (99)
        synthetic_results(synthetic_run(samples, accuracy={"accuracy_int8": 10.0, "accuracy": 99.0})),
        synthetic_results(synthetic_run(samples, accuracy={"accuracy": 98.5, "accuracy_int8": 10.0})),
        thresholds=SAME_JOB,
    )
    (fig,) = c.rows[0].figures
    assert (fig.metric, fig.baseline, fig.current) == ("accuracy", 99.0, 98.5) and c.exit_code == 0


def test_undeclared_names_are_neither_compared_nor_gated() -> None:
    samples = lognormal(200, seed=1)
    base = {"tolerance": {"min_top1": 0.9}, "max_accuracy_drop": 0.5, "f1": 0.9, "calibration_samples": 10}
    cur = {"tolerance": {"min_top1": 0.1}, "max_accuracy_drop": 50.0, "f1": 0.1, "calibration_samples": 99}
    c = compare_results(
        synthetic_results(synthetic_run(samples, accuracy=base)),
        synthetic_results(synthetic_run(samples, accuracy=cur)),
        thresholds=SAME_JOB,
    )
    assert c.rows[0].figures == () and c.exit_code == 0


def test_nested_per_output_figures_are_judged_by_their_declaration() -> None:
    samples = lognormal(200, seed=1)
    c = compare_results(
        synthetic_results(synthetic_run(samples, accuracy={"outputs": {"logits": {"top1_agreement": 0.99}}})),
        synthetic_results(synthetic_run(samples, accuracy={"outputs": {"logits": {"top1_agreement": 0.90}}})),
        thresholds=SAME_JOB,
    )
    (fig,) = c.rows[0].figures
    assert fig.metric == "outputs.logits.top1_agreement" and fig.worsening_points == pytest.approx(9.0)
    assert c.exit_code == 1


# A digits CNN quantized twice: a good int8 variant (accuracy unchanged) and a bad one (33 points lost).
GOOD = {"accuracy": 99.3, "accuracy_reference": 99.3, "accuracy_drop": 0.0, "top1_agreement": 1.0,
        "top5_containment": 1.0, "sqnr_db": 31.0, "cosine_min": 0.999,
        "tolerance": {"max_accuracy_drop": 1.0}}  # fmt: skip
BAD = {"accuracy": 66.3, "accuracy_reference": 99.3, "accuracy_drop": 33.0, "top1_agreement": 0.664,
       "top5_containment": 0.95, "sqnr_db": 4.0, "cosine_min": 0.41,
       "tolerance": {"max_accuracy_drop": 1.0}}  # fmt: skip


@pytest.fixture
def digits_files(tmp_path: Path) -> tuple[Path, Path]:
    samples = lognormal(300, seed=1)
    good = save_results(synthetic_results(synthetic_run(samples, accuracy=GOOD)), tmp_path / "good.json")
    bad = save_results(synthetic_results(synthetic_run(samples, accuracy=BAD)), tmp_path / "bad.json")
    return good, bad


def test_digits_good_then_bad_is_a_regression(
    digits_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = digits_files
    assert (
        main(["compare", str(good), str(bad), "--json", str(tmp_path / "cmp.json"), "--job-drift", "0"]) == 1
    )
    out = capsys.readouterr().out
    assert "accuracy_drop worse by 33.00 points" in out and "accuracy worse by 33.00 points" in out


def test_digits_bad_then_good_is_no_regression(
    digits_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = digits_files
    assert main(["compare", str(bad), str(good), "--job-drift", "0"]) == 0
    assert "no regression" in capsys.readouterr().out
    rows = compare_results(
        synthetic_results(synthetic_run(lognormal(300, seed=1), accuracy=BAD)),
        synthetic_results(synthetic_run(lognormal(300, seed=1), accuracy=GOOD)),
        thresholds=SAME_JOB,
    ).rows
    changes = {f.metric: f.change for f in rows[0].figures}
    assert changes == {
        "accuracy": "better", "accuracy_reference": "unchanged", "accuracy_drop": "better",
        "top1_agreement": "better", "top5_containment": "better", "sqnr_db": "better", "cosine_min": "better",
    }  # fmt: skip


def test_the_docs_table_matches_the_declarations() -> None:
    """docs/bench.md lists every declared figure with its unit, direction and whether the gate gates it."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bench.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`") and cells[2] in {b.value for b in Better}:
            rows[cells[0].strip("`")] = tuple(cells[1:4])
    expected = {
        n: (i.unit.value, i.better.value, "yes" if _quality(i) or _count(i) else "no")
        for n, i in FIGURES.items()
    }
    assert rows == expected
