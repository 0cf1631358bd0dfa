"""ONNX Runtime static int8: every exposed option reaches the calibrator or shows in the QDQ graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from infership.calibration import from_numpy
from infership.convert.int8.ort import (
    CalibrationMethod,
    OrtQuantConfig,
    calibrate,
    check_qdq,
    preprocess_model,
    quantize_qdq,
    scan_qdq,
)
from infership.runtime import Artifact, ConversionError, InvalidInputError


@pytest.fixture(scope="module")
def prepared(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny CNN, pre-processed, with a bound calibration set of 48 random images."""
    art = Artifact.load(tiny_artifact)
    work = tmp_path_factory.mktemp("ort")
    pre = work / "pre.onnx"
    preprocess_model(art.path_of(art.manifest.variant("onnx-fp32").files[0]), pre)
    x = np.random.default_rng(0).standard_normal((48, 3, 16, 16)).astype(np.float32)
    x[:, 0] *= 3.0  # a long tail, so that percentile and histogram choices matter
    cset = from_numpy(x, batch_size=8).bind(art.manifest.inputs)
    return pre, cset, work


def _ranges(cal) -> dict[str, tuple[float, float]]:
    return {k: tuple(float(v) for v in np.ravel(d.range_value)) for k, d in cal.ranges.data.items()}


@pytest.mark.parametrize(
    ("config", "expect"),
    [
        (
            OrtQuantConfig(
                method="minmax", moving_average=True, averaging_constant=0.2, symmetric_activations=True
            ),
            {
                "calibrator": "MinMaxCalibrater",
                "moving_average": True,
                "averaging_constant": 0.2,
                "symmetric": True,
            },
        ),
        (
            OrtQuantConfig(method="entropy", num_bins=64, num_quantized_bins=32),
            {"calibrator": "EntropyCalibrater", "num_bins": 64, "num_quantized_bins": 32, "symmetric": False},
        ),
        (
            OrtQuantConfig(method="percentile", percentile=99.5, num_bins=512),
            {"calibrator": "PercentileCalibrater", "percentile": 99.5, "num_bins": 512},
        ),
    ],
    ids=["minmax", "entropy", "percentile"],
)
def test_every_calibration_option_reaches_the_calibrator(prepared, config, expect):
    pre, cset, work = prepared
    cal = calibrate(pre, cset, config, workdir=work)
    for key, value in expect.items():
        assert cal.applied[key] == value, f"{key}: asked {value!r}, calibrator held {cal.applied.get(key)!r}"
    step = cal.step(cset)
    assert step.params["method"] == config.method.value and step.params["samples"] == 48


def test_percentile_and_bins_change_the_computed_ranges(prepared):
    pre, cset, work = prepared
    wide = _ranges(calibrate(pre, cset, OrtQuantConfig(method="percentile", percentile=99.999), workdir=work))
    narrow = _ranges(calibrate(pre, cset, OrtQuantConfig(method="percentile", percentile=90.0), workdir=work))
    assert narrow["x"][1] < 0.8 * wide["x"][1]
    coarse = _ranges(calibrate(pre, cset, OrtQuantConfig(method="entropy", num_bins=128), workdir=work))
    fine = _ranges(calibrate(pre, cset, OrtQuantConfig(method="entropy", num_bins=512), workdir=work))
    assert coarse != fine  # CalibNumBins is what quantize_static's extra_options silently drops


def test_chunked_collection_gives_the_same_minmax_ranges(prepared):
    pre, cset, work = prepared
    one = _ranges(calibrate(pre, cset, OrtQuantConfig(chunk_batches=100), workdir=work))
    many = _ranges(calibrate(pre, cset, OrtQuantConfig(chunk_batches=1), workdir=work))
    assert one.keys() == many.keys()
    for k in one:
        np.testing.assert_allclose(one[k], many[k], rtol=1e-6)


def _quantize(prepared, config: OrtQuantConfig, name: str):
    pre, cset, work = prepared
    out = work / f"{name}.onnx"
    step = quantize_qdq(pre, out, calibrate(pre, cset, config, workdir=work), config)
    return out, step


def test_cpu_preset_is_u8s8_per_channel(prepared):
    _, step = _quantize(prepared, OrtQuantConfig.cpu_vnni(), "vnni")
    r = step.result
    assert r["activation_types"] == ["uint8"] and r["weight_types"] == ["int8"]
    assert r["per_channel_weights"] == r["quantized_weights"] > 0
    assert step.params["preset"] == "cpu_vnni" and step.params["format"] == "QDQ"


def test_tensorrt_preset_is_symmetric_s8s8(prepared):
    _, step = _quantize(prepared, OrtQuantConfig.tensorrt(), "trt")
    assert step.result["activation_types"] == ["int8"]
    assert step.result["activation_zero_points"] == [0]
    assert step.params["target"] == "ort-trt"


def test_reduce_range_keeps_weights_in_7_bits(prepared):
    import onnx
    from onnx import numpy_helper

    out, _ = _quantize(prepared, OrtQuantConfig.cpu_avx2(), "avx2")
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer]
    q = [w for w in weights if w.dtype == np.int8 and w.ndim > 1]
    assert q and max(int(np.abs(w.astype(int)).max()) for w in q) <= 64


def test_per_tensor_weights(prepared):
    _, step = _quantize(prepared, OrtQuantConfig(per_channel=False), "pertensor")
    assert step.result["per_channel_weights"] == 0 and step.result["quantized_weights"] > 0


def test_excluded_nodes_and_op_types_stay_float(prepared):
    import onnx

    pre, _, _ = prepared
    conv = next(n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv")
    base, _ = _quantize(prepared, OrtQuantConfig(), "base")
    _, base_nodes = scan_qdq(base)
    assert conv in base_nodes
    out, step = _quantize(prepared, OrtQuantConfig().excluding(nodes=(conv,)), "noconv")
    assert conv not in scan_qdq(out)[1] and step.params["exclude_nodes"] == [conv]
    out, _ = _quantize(prepared, OrtQuantConfig(exclude_op_types=("Gemm",)), "nogemm")
    gemm = next(n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Gemm")
    assert gemm not in scan_qdq(out)[1] and gemm in base_nodes


def test_unknown_exclusions_are_refused(prepared):
    with pytest.raises(InvalidInputError, match="not in the pre-processed graph"):
        _quantize(prepared, OrtQuantConfig(exclude_nodes=("/nope/Conv",)), "bad")
    with pytest.raises(InvalidInputError, match="do not occur in the graph"):
        _quantize(prepared, OrtQuantConfig(exclude_op_types=("LSTM",)), "bad2")


def test_a_model_that_contradicts_its_config_is_refused(prepared):
    out, _ = _quantize(prepared, OrtQuantConfig.cpu_vnni(), "contradict")
    summary, nodes = scan_qdq(out)
    with pytest.raises(ConversionError, match="activations are"):
        check_qdq(summary, nodes, OrtQuantConfig.tensorrt())
    with pytest.raises(ConversionError, match="per-tensor weights asked for"):
        check_qdq(summary, nodes, OrtQuantConfig(per_channel=False))


def test_bad_options_are_refused_at_construction():
    with pytest.raises(InvalidInputError, match="percentile"):
        OrtQuantConfig(percentile=0.0)
    with pytest.raises(ValueError):
        OrtQuantConfig(method="kl")
    with pytest.raises(InvalidInputError, match="num_bins >= num_quantized_bins"):
        OrtQuantConfig(method="entropy", num_bins=16)
    assert OrtQuantConfig(method="entropy").method is CalibrationMethod.ENTROPY


@pytest.mark.openvino
def test_fixed_batch_and_two_input_artifacts(static_artifact, two_io_artifact, tmp_path):
    import shutil

    from infership.convert.int8 import quantize
    from infership.runtime import Predictor
    from infership.runtime.tasks import Task

    rng = np.random.default_rng(0)
    root = Path(shutil.copytree(static_artifact, tmp_path / "static"))
    report = quantize(root, from_numpy(rng.standard_normal((40, 3, 16, 16)).astype(np.float32)), samples=24)
    assert report.committed and report.targets[0].metrics.samples == 8  # 20% held out: 2 full batches of 4
    with Predictor.load(root, backend="openvino", precision="int8") as p:
        assert p.predict(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))["logits"].shape == (4, 5)
    root = Path(shutil.copytree(two_io_artifact, tmp_path / "two"))
    # Two outputs: the task is not obvious from the shapes (inferred: tensor). Its first output holds class
    # scores; say so, so that the budget has a figure to check (top-1 agreement of "logits").
    assert Artifact.load(root).manifest.task is Task.TENSOR
    data = {
        "image": rng.standard_normal((40, 3, 8, 8)).astype(np.float32),
        "extra": rng.standard_normal((40, 4)).astype(np.float32),
    }
    with pytest.raises(InvalidInputError, match="expected one of: tensor, classification"):
        quantize(root, from_numpy(data), task="pose-estimation")
    report = quantize(root, from_numpy(data), max_accuracy_drop=100.0, task="classification")
    assert [t.variant_id for t in report.targets] == ["onnx-int8", "openvino-int8"]
    assert all(
        t.metrics.task == "classification" and t.metrics.top1_agreement is not None for t in report.targets
    )
    m = Artifact.load(root).manifest  # the task is recorded with the new variants
    assert m.task is Task.CLASSIFICATION
    assert m.variant("onnx-int8").validation["task"] == "classification"
    with Predictor.load(root, backend="ort-cpu", precision="int8") as p:
        out = p.predict({k: v[:3] for k, v in data.items()})
    assert out["logits"].shape == (3, 3) and out["embed"].shape == (3, 6)


def test_a_budget_the_task_gives_no_figure_for_is_refused_before_any_work(two_io_artifact, tmp_path):
    import shutil

    from infership.convert.int8 import quantize

    root = Path(shutil.copytree(two_io_artifact, tmp_path / "two"))  # two outputs: task "tensor"
    before = (root / "manifest.json").read_text()
    rng = np.random.default_rng(0)
    data = {
        "image": rng.standard_normal((20, 3, 8, 8)).astype(np.float32),
        "extra": rng.standard_normal((20, 4)).astype(np.float32),
    }
    with pytest.raises(InvalidInputError, match="needs a loss figure"):
        quantize(root, from_numpy(data), targets="ort", max_accuracy_drop=1.0)
    # Refused before the data is even read (this source does not exist) or any model is run.
    with pytest.raises(InvalidInputError, match="needs a loss figure.*task 'tensor'"):
        quantize(root, str(tmp_path / "no-such-data.npz"), targets="ort", max_accuracy_drop=1.0)
    assert (root / "manifest.json").read_text() == before
    report = quantize(root, from_numpy(data), targets="ort")  # without a budget: element-wise figures only
    metrics = report.targets[0].metrics
    assert metrics.task == "tensor" and metrics.top1_agreement is None and metrics.loss_points is None
    # Both outputs judged element-wise; int8 keeps them close to fp32, the aggregate being the worst output.
    assert set(metrics.outputs) == {"logits", "embed"}
    assert 10.0 < metrics.sqnr_db == min(o.sqnr_db for o in metrics.outputs.values()) < 200.0
    assert metrics.cosine_mean > 0.95


def test_cli_task_flag_sets_the_task_before_judging(two_io_artifact, tmp_path, capsys):
    import shutil

    from infership.runtime.tasks import Task

    from infership.cli import main

    root = Path(shutil.copytree(two_io_artifact, tmp_path / "two"))
    rng = np.random.default_rng(2)
    data = tmp_path / "data.npz"
    np.savez(data, image=rng.standard_normal((20, 3, 8, 8)), extra=rng.standard_normal((20, 4)))
    argv = [
        "quantize",
        str(root),
        "--calibration",
        str(data),
        "--target",
        "ort",
        "--max-accuracy-drop",
        "100",
    ]
    assert main([*argv, "--json"]) == 1  # inferred task "tensor": the budget has no figure
    assert "needs a loss figure" in capsys.readouterr().err
    assert main([*argv, "--json", "--task", "classification"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["committed"] and out["targets"][0]["metrics"]["task"] == "classification"
    assert "top1_agreement" in out["targets"][0]["metrics"]
    assert Artifact.load(root).manifest.task is Task.CLASSIFICATION
