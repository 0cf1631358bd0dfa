"""End to end on real data: the fine-tuned digits CNN, int8 for ONNX Runtime and OpenVINO, within budget.

Acceptance: int8 accuracy on the digits test split within 0.5 points of fp32 for both variants.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from infership.calibration import from_numpy
from infership.convert.int8 import quantize
from infership.runtime import Artifact, InvalidInputError, Predictor
from infership.runtime.figures import Agreement
from infership.runtime.tasks import judge_for

from tests.calibration.digits import (
    DATA_PY,
    copy_artifact,
    digits_artifact,
    from_digits,
    load_digits_split,
    shared_base,
)
from tests.convert.int8.test_layout import EXTRAS

pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_artifact(shared_base(tmp_path_factory))


@pytest.fixture(scope="module")
def quantized(pristine: Path, tmp_path_factory: pytest.TempPathFactory):
    root = copy_artifact(pristine, tmp_path_factory.mktemp("q") / "digits")
    report = quantize(root, from_digits("train"), holdout=from_digits("test"), max_accuracy_drop=0.5)
    return root, report


def test_both_variants_stay_within_half_a_point_on_the_test_split(quantized):
    _, report = quantized
    assert report.committed and report.passed
    assert [t.variant_id for t in report.targets] == ["onnx-int8", "openvino-int8"]
    for t in report.targets:
        m = t.metrics
        assert m.samples == 360 and m.accuracy_reference > 97.0
        assert m.accuracy_drop <= 0.5, f"{t.variant_id}: {m.accuracy_reference} → {m.accuracy}"
        assert m.top1_agreement >= 0.99 and m.sqnr_db > 20.0


def test_manifest_records_steps_calibration_and_validation(quantized):
    root, _ = quantized
    art = Artifact.load(root)
    art.verify_all()
    ort_v = art.manifest.variant("onnx-int8")
    assert (ort_v.format, ort_v.precision, ort_v.target) == ("onnx", "int8", "ort-cpu")
    assert [s.name for s in ort_v.steps] == ["quant_pre_process", "calibrate", "quantize_static", "repair"]
    assert ort_v.calibration["kind"] == "digits" and ort_v.calibration["samples"] == 128
    assert ort_v.validation["passed"] is True and ort_v.validation["holdout"]["split"] == "test"
    ov_v = art.manifest.variant("openvino-int8")
    assert (ov_v.format, ov_v.precision) == ("openvino", "int8")
    assert [Path(f.path).suffix for f in ov_v.files] == [".xml", ".bin"]


def test_quantize_records_reference_statistics_for_drift_monitoring(quantized):
    from infership.runtime.monitoring import Monitor
    from infership.runtime.statistics import REFERENCE_KEY

    root, _ = quantized
    manifest = Artifact.load(root).manifest
    ref = manifest.extra[REFERENCE_KEY]
    assert ref["samples"] == 360 and "held-out" in ref["source"]
    (name,) = ref["inputs"]
    assert 0.0 <= ref["inputs"][name]["mean"] <= 16.0  # the digits' pixel values, as the model sees them
    classes = next(iter(ref["outputs"].values()))["classes"]
    assert len(classes) == 10 and abs(sum(classes) - 1.0) < 1e-6 and max(classes) < 0.2  # ten balanced digits
    assert Monitor(manifest).drift is not None


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
def test_predictor_loads_int8_and_reproduces_the_recorded_accuracy(quantized, backend):
    root, report = quantized
    x, y = load_digits_split("test")
    with Predictor.load(root, backend=backend, precision="int8") as p:
        assert p.variant.precision == "int8"
        outputs = p.predict(x)
    pred = judge_for(p.manifest.task).predictions(outputs)
    recorded = next(t for t in report.targets if t.variant_id == p.variant.id).metrics.accuracy
    # the report rounds to 4 decimals
    assert float((pred == y).mean() * 100) == pytest.approx(recorded, abs=1e-3)


@pytest.mark.parametrize(("variant_id", "backend"), [("onnx-int8", "ort-cpu"), ("openvino-int8", "openvino")])
def test_validation_ran_each_candidate_through_its_backend(quantized, variant_id, backend):
    """The recorded figures are what the written variant gives through the Predictor on its backend,
    judged by the artifact's task against the fp32 variant on ort-cpu: there is no second way to run it."""
    root, report = quantized
    art = Artifact.load(root)
    val = art.manifest.variant(variant_id).validation
    assert val["backend"] == backend and val["reference"] == "onnx-fp32 on ort-cpu"
    assert next(t for t in report.targets if t.variant_id == variant_id).backend == backend
    batches = list(from_digits("test").bind(art.manifest.inputs).batches())
    with (
        Predictor.load(art, backend="ort-cpu", variant="onnx-fp32") as fp32,
        Predictor.load(art, backend=backend, variant=variant_id) as int8,
    ):
        ref = [fp32.predict(b.feeds) for b in batches]
        cand = [int8.predict(b.feeds) for b in batches]
    labels = np.concatenate([b.labels for b in batches])
    again = judge_for(art.manifest.task).compare(ref, cand, labels=labels)
    assert again.to_dict() == Agreement.from_dict(val).to_dict()
    assert val["loss_points"] == again.loss_points == val["accuracy_drop"]


def test_validation_keys_are_the_agreement_record_plus_the_int8_extras(quantized):
    root, _ = quantized
    val = Artifact.load(root).manifest.variant("onnx-int8").validation
    assert set(val) == set(Agreement.from_dict(val).to_dict()) | EXTRAS
    for gone in ("accuracy_int8", "accuracy_fp32", "drop"):
        assert gone not in val


def test_holdout_split_off_the_calibration_data_by_default(pristine, tmp_path):
    root = copy_artifact(pristine, tmp_path / "d")
    report = quantize(root, from_digits("train"), targets="ort", samples=64, holdout_fraction=0.25)
    assert report.holdout["selection"]["split"]["part"] == "holdout"
    assert report.calibration["samples"] == 64 and report.holdout["samples"] == 359
    assert Artifact.load(root).manifest.variant("onnx-int8").validation["holdout"]["samples"] == 359


def test_mismatching_calibration_data_is_refused_before_any_work(pristine, tmp_path):
    root = copy_artifact(pristine, tmp_path / "d")
    before = (root / "manifest.json").read_text()
    with pytest.raises(InvalidInputError, match="size 8 on axis 2"):
        quantize(root, from_numpy(np.zeros((32, 1, 16, 16), np.float32)))
    assert (root / "manifest.json").read_text() == before


def test_cli_writes_the_variant_and_prints_the_report(pristine, tmp_path, capsys):
    from infership.cli import main

    root = copy_artifact(pristine, tmp_path / "d")
    argv = ["quantize", str(root), "--calibration", f"{DATA_PY}:train", "--holdout", f"{DATA_PY}:test"]
    rc = main([*argv, "--target", "ort", "--samples", "64", "--max-accuracy-drop", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["committed"] and out["targets"][0]["variant"] == "onnx-int8"
    assert Artifact.load(root).manifest.variant("onnx-int8").validation["max_accuracy_drop"] == 1.0
