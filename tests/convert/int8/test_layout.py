"""The int8 package's own types: one table of variant ids and file names, and the validation record's keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from infership.convert.int8 import types
from infership.convert.int8.types import (
    LAYOUTS,
    Int8Outlook,
    QuantizeReport,
    Target,
    TargetReport,
)
from infership.runtime.errors import InvalidInputError
from infership.runtime.figures import Agreement

PACKAGE = Path(types.__file__).parent

#: What int8 adds to the Agreement figures in a variant's ``validation``.
EXTRAS = {
    "reference",
    "backend",
    "passed",
    "loss_points",
    "max_accuracy_drop",
    "latency_ms",
    "fp32_latency_ms",
    "excluded_nodes",
    "holdout",
    "int8_outlook",
}


def test_each_target_has_one_variant_id_format_backend_and_file_name():
    assert {t.value for t in Target} == set(LAYOUTS)
    rows = {t: (t.variant_id, t.format, t.backend) for t in Target}
    assert rows == {
        Target.ORT: ("onnx-int8", "onnx", "ort-cpu"),
        Target.ORT_TENSOR: ("onnx-int8-tensor", "onnx", "ort-cpu"),
        Target.OPENVINO: ("openvino-int8", "openvino", "openvino"),
        Target.OPENVINO_IR: ("openvino-int8-ir", "openvino", "openvino"),
        Target.TORCH: ("torch-int8", "torchscript", "torch"),
        Target.ORT_DYNAMIC: ("onnx-int8-dynamic", "onnx", "ort-cpu"),
        Target.OPENVINO_WEIGHTS: ("openvino-int8-weights", "openvino", "openvino"),
    }
    assert Target.ORT.artifact_name(Path("/tmp/x/ort-int8-3.onnx")) == "model-int8.onnx"
    assert Target.ORT_TENSOR.artifact_name(Path("/tmp/x/onnx-int8-tensor-1.onnx")) == "model-int8-tensor.onnx"
    assert Target.OPENVINO.artifact_name(Path("ov-int8-0/model.bin")) == "openvino-int8/model.bin"
    assert Target.OPENVINO_IR.artifact_name(Path("x-1/model.xml")) == "openvino-int8-ir/model.xml"
    assert Target.TORCH.artifact_name(Path("torch-int8.torchscript")) == "model-int8.torchscript"


def test_variant_ids_and_file_names_are_spelled_in_the_types_module_only():
    spelled = re.compile(r"""["'](onnx|openvino|torch)-int8|model-int8""")
    offenders = [
        p.name for p in sorted(PACKAGE.glob("*.py")) if p.name != "types.py" and spelled.search(p.read_text())
    ]
    assert not offenders, f"int8 variant ids or file names spelled outside types.py: {offenders}"


def test_public_names_resolve_to_the_types_module():
    import infership.convert as convert
    import infership.convert.int8 as int8

    assert int8.Target is convert.Target is Target
    assert int8.QuantizeReport is convert.QuantizeReport is QuantizeReport
    assert convert.AccuracyBudgetError is types.AccuracyBudgetError
    assert callable(convert.quantize) and convert.quantize is int8.quantize


def test_target_names_parse_and_unknown_ones_are_refused():
    assert Target.parse("all") == (Target.ORT, Target.OPENVINO, Target.TORCH)
    assert Target.parse(["openvino", Target.ORT, "openvino"]) == (Target.OPENVINO, Target.ORT)
    with pytest.raises(InvalidInputError, match="unknown target 'tensorrt'"):
        Target.parse("ort,tensorrt")


def _report(metrics: Agreement, *, budget: float | None) -> tuple[QuantizeReport, TargetReport]:
    rep = TargetReport(
        target=Target.ORT,
        variant_id=Target.ORT.variant_id,
        metrics=metrics,
        latency_ms=0.5,
        fp32_latency_ms=1.0,
        passed=True,
        backend="ort-cpu",
        excluded_nodes=("/a/Conv",),
    )
    report = QuantizeReport(
        artifact="a",
        targets=(rep,),
        calibration={"samples": 8},
        holdout={"samples": 4},
        outlook=Int8Outlook("vnni", "fast", ("ok",)),
        max_accuracy_drop=budget,
        committed=False,
        reference="onnx-fp32 on ort-cpu",
    )
    return report, rep


def test_validation_is_the_agreement_record_plus_the_int8_extras():
    metrics = Agreement(
        task="classification",
        samples=4,
        max_abs_err=0.1,
        max_rel_err=0.01,
        scale=10.0,
        cosine_min=0.99,
        cosine_mean=0.995,
        sqnr_db=30.0,
        top1_agreement=0.75,
        confident_top1_agreement=1.0,
        confident_samples=3,
        top5_containment=1.0,
        accuracy_reference=100.0,
        accuracy=75.0,
        accuracy_drop=25.0,
    )
    report, rep = _report(metrics, budget=30.0)
    val = report.validation(rep)
    assert set(val) == set(metrics.to_dict()) | EXTRAS
    assert Agreement.from_dict(val) == metrics  # the figures read back as the one record
    assert (val["accuracy_reference"], val["accuracy"], val["accuracy_drop"]) == (100.0, 75.0, 25.0)
    assert val["loss_points"] == 25.0 and val["backend"] == "ort-cpu"


def test_figures_that_do_not_apply_are_left_out():
    metrics = Agreement(task="tensor", samples=4, max_abs_err=0.0, sqnr_db=200.0)
    report, rep = _report(metrics, budget=None)
    val = report.validation(rep)
    assert set(val) == set(metrics.to_dict()) | EXTRAS - {"loss_points", "max_accuracy_drop"}
    assert "top1_agreement" not in val and "accuracy" not in val
