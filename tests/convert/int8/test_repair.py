"""Culprit-layer repair: one planted layer breaks int8; ranking finds it and excluding it restores accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
from infership.convert.int8 import AccuracyBudgetError, quantize
from infership.convert.int8.repair import repair
from infership.convert.int8.types import Evaluation, LayerError
from infership.runtime import Artifact, Predictor
from infership.runtime.figures import Agreement

from tests.calibration.digits import copy_artifact, digits_artifact, from_digits, shared_base

CULPRIT = "/plant/Conv_output_0"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_artifact(shared_base(tmp_path_factory), plant=True)


@pytest.mark.openvino
def test_repair_finds_the_planted_layer_and_restores_accuracy(planted, tmp_path):
    root = copy_artifact(planted, tmp_path / "p")
    report = quantize(root, from_digits("train"), holdout=from_digits("test"), max_accuracy_drop=0.5)
    assert report.passed and report.committed
    for t in report.targets:
        steps = t.repair.steps
        assert steps[0].metrics.accuracy_drop > 50.0, "the planted layer should break plain int8"
        assert t.repair.ranking[0].tensor == CULPRIT
        # the culprit hides in the whole-tensor SQNR (its outlier channel dominates) but not per channel
        assert t.repair.ranking[0].sqnr_db > 30.0 > 10.0 > t.repair.ranking[0].channel_sqnr_db
        assert steps[1].tensor == CULPRIT and "/unplant/Conv" in steps[1].excluded
        assert t.metrics.accuracy_drop <= 0.5 and len(steps) == 2
        assert steps[1].latency_ms > 0
    ort_report = report.targets[0]
    assert set(ort_report.excluded_nodes) == {"/plant/Conv", "/unplant/Conv"}
    repair_step = Artifact.load(root).manifest.variant("onnx-int8").steps[-1]
    assert repair_step.name == "repair" and repair_step.result["excluded_nodes"] == [
        "/plant/Conv",
        "/unplant/Conv",
    ]
    with Predictor.load(root, backend="ort-cpu", precision="int8") as p:
        assert p.variant.validation["excluded_nodes"] == ["/plant/Conv", "/unplant/Conv"]


def test_without_repair_the_budget_fails_and_nothing_is_written(planted, tmp_path):
    root = copy_artifact(planted, tmp_path / "p")
    before = (root / "manifest.json").read_text()
    files_before = sorted(p.name for p in root.rglob("*"))
    with pytest.raises(AccuracyBudgetError, match="misses the accuracy budget") as info:
        quantize(
            root,
            from_digits("train"),
            holdout=from_digits("test"),
            targets="ort",
            max_accuracy_drop=0.5,
            repair=False,
        )
    assert not info.value.report.committed
    assert info.value.report.targets[0].metrics.accuracy_drop > 50.0
    assert (root / "manifest.json").read_text() == before
    assert sorted(p.name for p in root.rglob("*")) == files_before


def _metrics(drop: float) -> Agreement:
    return Agreement(
        task="classification",
        samples=10,
        sqnr_db=1.0,
        cosine_mean=1.0,
        cosine_min=1.0,
        max_abs_err=0.0,
        top1_agreement=1.0 - drop / 100,
    )


def test_loop_stops_at_the_step_limit_and_reports_each_step():
    built: list[tuple[str, ...]] = []
    ranking = [LayerError(f"t{i}", (f"n{i}", f"m{i}"), float(i), 40.0) for i in range(10)]

    def requantize(excluded):
        built.append(excluded)
        return len(built)

    def evaluate(model):
        return Evaluation(_metrics(10.0 - model), latency_ms=float(model))

    _, result = repair(
        requantize=requantize, evaluate=evaluate, rank=lambda m: ranking, budget=0.0, max_steps=3
    )
    assert not result.within_budget and result.stopped == "step limit (3) reached"
    assert [s.excluded for s in result.steps] == [(), ("n0", "m0"), ("n1", "m1"), ("n2", "m2")]
    assert built[-1] == ("n0", "m0", "n1", "m1", "n2", "m2")
    assert [s.metrics.loss_points for s in result.steps] == [9.0, 8.0, 7.0, 6.0]
    assert [s.to_dict()["loss_points"] for s in result.steps] == [9.0, 8.0, 7.0, 6.0]


def test_loop_stops_when_within_budget_and_ranks_only_when_needed():
    calls = []
    _, result = repair(
        requantize=lambda ex: 0,
        evaluate=lambda m: Evaluation(_metrics(0.0), 1.0),
        rank=lambda m: calls.append(m) or [],
        budget=0.5,
    )
    assert result.within_budget and len(result.steps) == 1 and not calls
