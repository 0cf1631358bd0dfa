"""build_artifact end to end: export, check, simplify, fp16, OpenVINO IR, torch program — then every variant
loaded through the real backends (torch, ort-cpu, openvino) and compared with the eager PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from infership.convert import Check, Tolerance, build_artifact, compare_outputs
from infership.convert.validate import torch_outputs
from infership.runtime import InvalidInputError, Task

from infership import ArtifactError, ConversionError, Predictor, ValidationError
from tests.convert import models

# (variant id, backend, tolerance against eager torch on fresh inputs; None: the one the build checked with,
# which for openvino-fp16 follows the precision OpenVINO executes in here — bf16 on AVX512_BF16 CPUs)
ALL_VARIANTS = [
    pytest.param("torch-fp32", "torch", Tolerance.fp32(), id="torch-fp32"),
    pytest.param("onnx-fp32", "ort-cpu", Tolerance.fp32(), id="onnx-fp32-ort"),
    pytest.param(
        "onnx-fp32", "openvino", Tolerance.fp32(), id="onnx-fp32-openvino", marks=pytest.mark.openvino
    ),
    pytest.param("onnx-fp16", "ort-cpu", Tolerance.fp16(), id="onnx-fp16-ort"),
    pytest.param(
        "openvino-fp32", "openvino", Tolerance.fp32(), id="openvino-fp32", marks=pytest.mark.openvino
    ),
    pytest.param("openvino-fp16", "openvino", None, id="openvino-fp16", marks=pytest.mark.openvino),
]


def _check_variant(artifact, model, feeds_list, variant_id, backend, tol):
    names = [s.name for s in artifact.manifest.outputs]
    if tol is None:
        tol = Tolerance.from_dict(artifact.manifest.variant(variant_id).validation["tolerance"])
    want = torch_outputs(model, feeds_list, names)
    with Predictor.load(artifact.root, backend=backend, variant=variant_id) as p:
        assert p.backend == backend and p.variant.id == variant_id
        got = [p.predict(f) for f in feeds_list]
    check = compare_outputs(want, got, tolerance=tol, task=artifact.manifest.task)
    assert check.passed, check.failures
    return check


def _feeds(rng, **shapes):
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}


# ---------------------------------------------------------------------------------------------- digits CNN
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from sklearn.datasets import load_digits

    model = models.digits_cnn()
    real = (load_digits().images[:24] / 16.0).astype(np.float32)[:, None]  # 24 real 1×8×8 digits
    art = build_artifact(
        model,
        tmp_path_factory.mktemp("conv") / "digits",
        input_shapes=[(1, 1, 8, 8)],
        validation_data=[real[:16], real[16:]],
        labels=[str(i) for i in range(10)],
    )
    return model, art


def test_export_records_reference_statistics_from_its_validation_data(digits, tmp_path):
    from infership.runtime.statistics import REFERENCE_KEY

    model, art = digits
    ref = art.manifest.extra[REFERENCE_KEY]
    assert ref["samples"] == 24 and ref["source"] == "export validation data"
    real = load_digits_images(24)
    assert ref["inputs"]["x"]["mean"] == pytest.approx(float(real.mean()), rel=1e-3)
    assert len(ref["outputs"][art.manifest.outputs[0].name]["classes"]) == 10
    # Without real data nothing is recorded: random check inputs say nothing about production traffic.
    plain = build_artifact(model, tmp_path / "plain", input_shapes=[(1, 1, 8, 8)], fp16=False, openvino=False)
    assert REFERENCE_KEY not in plain.manifest.extra


def test_validation_data_may_be_a_data_source_of_which_the_first_batches_are_checked(digits, tmp_path):
    """A data source string (any form --calibration takes) as validation data: its first SOURCE_BATCHES
    batches join the checks against torch (and the reference statistics)."""
    from infership.convert.inputs import SOURCE_BATCHES
    from infership.runtime.statistics import REFERENCE_KEY

    model, _ = digits
    real = load_digits_images(300)
    np.savez(tmp_path / "real.npz", x=real)
    art = build_artifact(model, tmp_path / "from-source", input_shapes=[(1, 1, 8, 8)], fp16=False, openvino=False,
                         validation_data=str(tmp_path / "real.npz"))  # fmt: skip
    ref = art.manifest.extra[REFERENCE_KEY]
    used = SOURCE_BATCHES * 16  # from_spec's batches of 16
    assert ref["samples"] == used < len(real)
    assert ref["inputs"]["x"]["mean"] == pytest.approx(float(real[:used].mean()), rel=1e-3)
    with pytest.raises(InvalidInputError, match="missing.npz"):
        build_artifact(model, tmp_path / "bad", input_shapes=[(1, 1, 8, 8)], fp16=False, openvino=False,
                       validation_data=str(tmp_path / "missing.npz"))  # fmt: skip


def load_digits_images(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:n] / 16.0).astype(np.float32)[:, None]


def test_digits_artifact_has_every_variant_checked(digits):
    _, art = digits
    m = art.manifest
    assert {v.id for v in m.variants} == {
        "onnx-fp32",
        "torch-fp32",
        "onnx-fp16",
        "openvino-fp32",
        "openvino-fp16",
    }
    assert "skipped" not in m.extra
    assert m.inputs[0].name == "x" and m.inputs[0].shape == ("batch", 1, 8, 8)
    assert m.outputs[0].shape == ("batch", 10)
    assert m.labels == tuple(str(i) for i in range(10))
    assert m.task is Task.CLASSIFICATION  # inferred: one [batch, 10] output and 10 labels
    for key in ("torch", "onnx", "openvino", "onnxslim", "onnxconverter-common"):
        assert key in m.versions
    assert ("onnxruntime" in m.versions) != ("onnxruntime-gpu" in m.versions)  # the one build installed
    for v in m.variants:
        val = v.validation
        assert val["passed"] is True, (v.id, val["failures"])
        for key in ("max_abs_err", "max_rel_err", "cosine_min", "sqnr_db", "samples", "tolerance"):
            assert key in val
        # Judged as the artifact's task: the classification figures are there, and within tolerance.
        assert val["task"] == "classification" and val["top1_agreement"] >= 0.9
        assert 0.9 <= val["top5_containment"] <= 1.0
        check = Check.from_dict(val)
        assert check.passed and check.agreement.samples == val["samples"]
        assert check.agreement.outputs[
            "output"
        ].max_abs_err <= check.tolerance.atol + check.tolerance.rtol * (
            check.agreement.outputs["output"].scale
        )
        assert val["real_samples"] == 24 and val["real"]["passed"]
        assert val["random_samples"] > 0 and val["nonfinite"] == 0
    assert m.variant("torch-fp32").format == "torch-export"
    assert m.variant("onnx-fp16").target == "ort-cuda"


def test_digits_onnx_steps_record_export_checks_and_node_counts(digits):
    _, art = digits
    steps = art.manifest.variant("onnx-fp32").steps
    assert [s.name for s in steps] == ["load", "torch.export", "export", "check", "simplify", "check"]
    export = steps[2].result
    assert export["exporter"] == "dynamo" and "fallback_reason" not in export and export["nodes"] > 0
    simplify = steps[4].result
    assert simplify["applied"] is True and simplify["nodes_before"] >= simplify["nodes_after"] > 0
    fp16 = art.manifest.variant("onnx-fp16").steps[0]
    assert fp16.name == "fp16" and fp16.result["io_types"] == "fp32" and fp16.result["casts_added"] >= 2


@pytest.mark.parametrize(("variant_id", "backend", "tol"), ALL_VARIANTS)
def test_digits_variants_match_torch_on_fresh_inputs(digits, variant_id, backend, tol):
    model, art = digits
    rng = np.random.default_rng(7)
    _check_variant(
        art, model, [_feeds(rng, x=(5, 1, 8, 8)), _feeds(rng, x=(1, 1, 8, 8))], variant_id, backend, tol
    )


def test_fp16_graph_keeps_fp32_io_and_fp16_weights(digits):
    import onnx

    _, art = digits
    v = art.manifest.variant("onnx-fp16")
    g = onnx.load(str(art.path_of(v.files[0]))).graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    kinds = {i.data_type for i in g.initializer if len(i.dims) >= 2}
    assert kinds == {onnx.TensorProto.FLOAT16}


# ---------------------------------------------------------------------------------------------- torchvision
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_on_every_backend(tmp_path, arch):
    import torchvision

    torch.manual_seed(0)
    model = models.settle_batchnorm(
        torchvision.models.get_model(arch, weights=None, num_classes=10), (8, 3, 64, 64)
    )
    art = build_artifact(
        model, tmp_path / arch, input_shapes=[(1, 3, 64, 64)], samples=2, task="classification"
    )
    assert {v.id for v in art.manifest.variants} == {
        "onnx-fp32",
        "torch-fp32",
        "onnx-fp16",
        "openvino-fp32",
        "openvino-fp16",
    }, art.manifest.extra.get("skipped")
    rng = np.random.default_rng(3)
    feeds = [_feeds(rng, x=(2, 3, 64, 64))]
    for vid, backend, tol in [(p.values[0], p.values[1], p.values[2]) for p in ALL_VARIANTS]:
        check = _check_variant(art, model, feeds, vid, backend, tol)
        assert check.agreement.top1_agreement == 1.0 or vid.endswith("fp16")


# ---------------------------------------------------------------------------------------------- shapes
@pytest.fixture(scope="module")
def two_io(tmp_path_factory):
    model = models.two_in_two_out()
    art = build_artifact(
        model,
        tmp_path_factory.mktemp("conv") / "two_io",
        input_shapes=[(2, 3, 16, 16), (2, 4)],
        output_names=["logits", "embedding"],
        fp16=False,
    )
    return model, art


@pytest.mark.parametrize(
    "backend", ["torch", "ort-cpu", pytest.param("openvino", marks=pytest.mark.openvino)]
)
def test_two_inputs_two_outputs(two_io, backend):
    model, art = two_io
    m = art.manifest
    assert [s.name for s in m.inputs] == ["image", "extra"]  # forward's parameter names
    assert [s.name for s in m.outputs] == ["logits", "embedding"]
    assert m.outputs[1].shape == ("batch", 6)
    assert m.task is Task.TENSOR  # two outputs and no labels: not obviously a classifier
    assert "top1_agreement" not in m.variant("onnx-fp32").validation
    rng = np.random.default_rng(1)
    want = torch_outputs(model, [_feeds(rng, image=(3, 3, 16, 16), extra=(3, 4))], ["logits", "embedding"])
    rng = np.random.default_rng(1)
    with Predictor.load(art.root, backend=backend) as p:
        got = p.predict(_feeds(rng, image=(3, 3, 16, 16), extra=(3, 4)))
    assert compare_outputs(want, [got]).passed


@pytest.fixture(scope="module")
def fully_conv(tmp_path_factory):
    model = models.fully_conv()
    art = build_artifact(
        model,
        tmp_path_factory.mktemp("conv") / "fcn",
        input_shapes=[(1, 3, 32, 32)],
        dynamic_axes={"x": {2: "height", 3: "width"}},
    )
    return model, art


@pytest.mark.parametrize(("variant_id", "backend", "tol"), ALL_VARIANTS)
def test_dynamic_spatial_size(fully_conv, variant_id, backend, tol):
    model, art = fully_conv
    assert art.manifest.inputs[0].shape == ("batch", 3, "height", "width")
    shapes = art.manifest.variant("onnx-fp32").validation["shapes"]
    assert len({tuple(s["x"][2:]) for s in shapes}) > 1, "the check must have varied the spatial size"
    rng = np.random.default_rng(5)
    _check_variant(
        art, model, [_feeds(rng, x=(2, 3, 32, 32)), _feeds(rng, x=(1, 3, 40, 56))], variant_id, backend, tol
    )


def test_static_batch(tmp_path):
    art = build_artifact(
        models.digits_cnn(),
        tmp_path / "static",
        input_shapes=[(3, 1, 8, 8)],
        dynamic_batch=False,
        fp16=False,
        openvino=False,
    )
    assert art.manifest.inputs[0].shape == (3, 1, 8, 8)
    with Predictor.load(art.root, backend="ort-cpu") as p:
        assert p.predict(np.zeros((3, 1, 8, 8), np.float32))["output"].shape == (3, 10)


# ---------------------------------------------------------------------------------------------- failures
def test_unexportable_op_is_a_conversion_error(tmp_path):
    with pytest.raises(ConversionError) as info:
        build_artifact(models.Unexportable(), tmp_path / "bad", input_shapes=[(2, 4)])
    msg = str(info.value)
    assert "could not export the model to ONNX" in msg
    assert "dynamo exporter" in msg and "torchscript exporter" in msg and "mystery" in msg
    assert "\n" not in msg
    assert not (tmp_path / "bad").exists()


def test_dynamo_failure_falls_back_to_torchscript_and_says_why(tmp_path):
    art = build_artifact(
        models.DataDependent().eval(), tmp_path / "dd", input_shapes=[(2, 4)], fp16=False, openvino=False
    )
    m = art.manifest
    export = next(s for s in m.variant("onnx-fp32").steps if s.name == "export")
    assert export.result["exporter"] == "torchscript"
    assert export.result["fallback_reason"].startswith("dynamo exporter:")
    torch_v = m.variant("torch-fp32")
    assert torch_v.format == "torchscript"
    save = next(s for s in torch_v.steps if s.name == "save-torch")
    assert "torch.export failed" in save.result["fallback_reason"]
    assert all(v.validation["passed"] for v in m.variants)


def test_disagreement_beyond_tolerance_fails_with_figures(tmp_path):
    with pytest.raises(ValidationError) as info:
        build_artifact(
            models.Drifting().eval(), tmp_path / "drift", input_shapes=[(2, 4)], fp16=False, openvino=False
        )
    assert "max_abs_err" in str(info.value) and "cosine_min" in str(info.value)
    val = info.value.validation
    assert val["passed"] is False and val["max_abs_err"] > 0 and val["failures"]
    assert not Check.from_dict(val).passed
    assert not (tmp_path / "drift").exists()


def test_refuses_to_overwrite_without_flag(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="overwrite"):
        build_artifact(models.digits_cnn(), tmp_path / "taken", input_shapes=[(1, 1, 8, 8)])
    assert (tmp_path / "taken" / "file.txt").read_text() == "keep me"


def test_variant_that_fails_its_check_is_left_out_and_recorded(tmp_path):
    impossible = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0)  # no fp16 graph is bit-exact
    art = build_artifact(
        models.digits_cnn(),
        tmp_path / "d",
        input_shapes=[(1, 1, 8, 8)],
        openvino=False,
        fp16_tolerance=impossible,
    )
    assert "onnx-fp16" not in {v.id for v in art.manifest.variants}
    (skipped,) = art.manifest.extra["skipped"]
    assert skipped["variant"] == "onnx-fp16" and "max_abs_err" in skipped["reason"]
    assert skipped["validation"]["passed"] is False
    with pytest.raises(ConversionError, match="onnx-fp16"):
        build_artifact(
            models.digits_cnn(),
            tmp_path / "d2",
            input_shapes=[(1, 1, 8, 8)],
            openvino=False,
            fp16_tolerance=impossible,
            strict=True,
        )


# ---------------------------------------------------------------------------------------------- options, sources
def test_explicit_exporter_opset_and_no_simplify(tmp_path):
    art = build_artifact(
        models.digits_cnn(),
        tmp_path / "ts",
        input_shapes=[(1, 1, 8, 8)],
        exporter="torchscript",
        opset=17,
        simplify=False,
        fp16=False,
        openvino=False,
    )
    v = art.manifest.variant("onnx-fp32")
    names = [s.name for s in v.steps]
    assert "simplify" not in names
    export = v.steps[names.index("export")]
    assert export.result["exporter"] == "torchscript" and export.result["opset"] == 17
    assert art.manifest.variant("torch-fp32").format == "torch-export"


def test_torchscript_and_pt2_sources(tmp_path):
    model = models.digits_cnn()
    x = torch.randn(2, 1, 8, 8)
    ts = tmp_path / "m.ts"
    torch.jit.trace(model, (x,)).save(str(ts))
    art = build_artifact(ts, tmp_path / "from_ts", input_shapes=[(1, 1, 8, 8)], fp16=False, openvino=False)
    tv = art.manifest.variant("torch-fp32")
    assert tv.format == "torchscript" and art.manifest.extra["source_kind"] == "torchscript"
    from infership.runtime import sha256_file

    assert tv.files[0].sha256 == sha256_file(ts), "the user's TorchScript file is kept as is"

    pt2 = tmp_path / "m.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: batch},)), str(pt2))
    art = build_artifact(pt2, tmp_path / "from_pt2", input_shapes=[(1, 1, 8, 8)], fp16=False, openvino=False)
    assert art.manifest.inputs[0].shape == ("batch", 1, 8, 8), "dynamic axes come from the program"
    assert art.manifest.variant("torch-fp32").format == "torch-export"
    assert all(v.validation["passed"] for v in art.manifest.variants)


def test_progress_callback_sees_every_step(tmp_path):
    calls = []
    build_artifact(
        models.digits_cnn(),
        tmp_path / "p",
        input_shapes=[(1, 1, 8, 8)],
        fp16=False,
        openvino=False,
        progress=lambda desc, done, total: calls.append((desc, done, total)),
    )
    totals = {t for _, _, t in calls}
    assert len(totals) == 1
    (total,) = totals
    assert [d for _, d, _ in calls] == list(range(total + 1))
    assert calls[-1][0] == "done"


# ---------------------------------------------------------------------------------------------- task
def test_task_is_inferred_only_with_evidence_and_can_be_set(tmp_path):
    kw = {"input_shapes": [(1, 1, 8, 8)], "fp16": False, "openvino": False, "torch_program": False}
    # One [batch, 10] output alone could be an embedding: judged element-wise (the labelled digits fixture
    # and the image classifier of test_preprocessing are inferred as classification).
    art = build_artifact(models.digits_cnn(), tmp_path / "plain", **kw)
    assert art.manifest.task is Task.TENSOR
    val = art.manifest.variant("onnx-fp32").validation
    assert val["task"] == "tensor" and "top1_agreement" not in val and val["passed"]

    art = build_artifact(models.digits_cnn(), tmp_path / "cls", task="classification", **kw)
    assert art.manifest.task is Task.CLASSIFICATION
    val = art.manifest.variant("onnx-fp32").validation
    assert val["task"] == "classification" and val["top1_agreement"] >= 0.9

    labels = [str(i) for i in range(10)]
    art = build_artifact(models.digits_cnn(), tmp_path / "tensor", labels=labels, task="tensor", **kw)
    assert art.manifest.task is Task.TENSOR and art.manifest.labels == tuple(labels)
    assert "top1_agreement" not in art.manifest.variant("onnx-fp32").validation


def test_classification_needs_two_or_more_classes():
    from infership.convert.resolve import check_task
    from infership.runtime import TensorSpec

    for shape in (("batch", 1), ("batch", 7, 7)):
        with pytest.raises(InvalidInputError, match=r"two or more classes.*\[batch, "):
            check_task(Task.CLASSIFICATION, [TensorSpec("y", "float32", shape)])
    for shape in (("batch", 2), ("batch", "classes")):  # a dynamic number of classes is the model's to say
        check_task(Task.CLASSIFICATION, [TensorSpec("y", "float32", shape)])
    check_task(Task.TENSOR, [TensorSpec("y", "float32", ("batch", 1))])


def test_a_bad_task_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="expected one of: tensor, classification"):
        build_artifact(
            models.digits_cnn(), tmp_path / "bad", input_shapes=[(1, 1, 8, 8)], task="pose-estimation"
        )
    with pytest.raises(InvalidInputError, match=r"classification.*\[batch, classes\]"):
        build_artifact(
            models.fully_conv(),
            tmp_path / "fcn",
            input_shapes=[(1, 3, 16, 16)],
            task="classification",
            fp16=False,
            openvino=False,
            torch_program=False,
        )
    assert not (tmp_path / "bad").exists() and not (tmp_path / "fcn").exists()


def test_bad_option_names_list_the_choices():
    from infership.convert import Exporter, Simplifier

    assert Exporter.parse("dynamo") is Exporter.DYNAMO and Simplifier.parse("none") is Simplifier.NONE
    with pytest.raises(InvalidInputError, match="expected one of: auto, dynamo, torchscript"):
        Exporter.parse("onnx")
    with pytest.raises(InvalidInputError, match="expected one of: auto, onnxslim, onnxsim, none"):
        Simplifier.parse("slim")


def test_model_outputs_must_be_tensors():
    from infership.convert.validate import name_outputs

    got = name_outputs({"a": torch.ones(2), "b": torch.zeros(1, 3)}, ["x", "y"])
    assert list(got) == ["x", "y"] and got["y"].shape == (1, 3) and isinstance(got["x"], np.ndarray)
    with pytest.raises(ConversionError, match="tuple"):
        name_outputs((torch.zeros(2), (torch.zeros(1),)), ["a", "b"])
    with pytest.raises(ConversionError, match="returned 1 outputs, expected 2"):
        name_outputs(torch.zeros(2), ["a", "b"])


def test_validate_against_torch_is_deprecated_but_still_judges():
    from infership.convert import validate_against_torch

    model = models.digits_cnn()
    rng = np.random.default_rng(5)
    feeds = [_feeds(rng, x=(3, 1, 8, 8)), _feeds(rng, x=(1, 1, 8, 8))]
    same = lambda f: torch_outputs(model, [f], ["output"])[0]  # noqa: E731
    off = lambda f: {"output": same(f)["output"] + 1.0}  # noqa: E731
    with pytest.warns(DeprecationWarning, match="compare_outputs"):
        check = validate_against_torch(model, same, feeds, output_names=["output"], task="classification")
    assert isinstance(check, Check) and check.passed and check.batches == 2
    assert check.agreement.samples == 4 and check.agreement.top1_agreement == 1.0
    with pytest.warns(DeprecationWarning):
        bad = validate_against_torch(model, off, feeds, output_names=["output"])
    assert not bad.passed and any("max_abs_err" in f for f in bad.failures)
    assert bad == compare_outputs(torch_outputs(model, feeds, ["output"]), [off(f) for f in feeds])
