"""Task segmentation at export: a model without per-pixel class scores is refused before any export work,
and class names are counted against channel 1 of a ``[batch, classes, H, W]`` output."""

from __future__ import annotations

import pytest
from infership.convert import build_artifact
from infership.convert.preprocessing import check_labels
from infership.convert.resolve import check_task
from infership.runtime import ConversionError, InvalidInputError, Task, TensorSpec

from . import models


def _spec(*shape, name="y"):
    return TensorSpec(name, "float32", tuple(shape))


def test_a_classifier_exported_as_a_segmenter_is_refused_before_the_export(tmp_path, monkeypatch):
    import infership.convert.build as build

    def no_export(*args, **kwargs):
        raise AssertionError("the task must be refused before the export")

    monkeypatch.setattr(build, "export_onnx", no_export)
    monkeypatch.setattr(build, "export_batch", no_export)
    with pytest.raises(InvalidInputError) as err:
        build_artifact(
            models.digits_cnn(), tmp_path / "seg", input_shapes=[(1, 1, 8, 8)], task="segmentation"
        )
    message = str(err.value)
    assert "[batch, classes, H, W] with two or more classes" in message
    assert "is [batch, 10]" in message
    assert "torch.cat([-x, x], dim=1)" in message and "two-class logits" in message
    assert not (tmp_path / "seg").exists()


def test_segmentation_needs_rank_4_scores_with_two_or_more_classes():
    for outputs in ([_spec("batch", 1, 8, 8)], [_spec("batch", 3, 8)], [_spec("batch", 10)], []):
        with pytest.raises(InvalidInputError, match=r"task 'segmentation' needs class scores"):
            check_task(Task.SEGMENTATION, outputs)
    with pytest.raises(InvalidInputError, match=r"'y' is \[batch, 1, 8, 8\]"):
        check_task(Task.SEGMENTATION, [_spec("batch", 1, 8, 8)])
    check_task(Task.SEGMENTATION, [_spec("batch", 2, 8, 8)])
    check_task(Task.SEGMENTATION, [_spec("batch", "classes", "h", "w")])  # a dynamic class count is allowed
    # torchvision's segmenters: the judge reads 'out', never the auxiliary head.
    check_task(Task.SEGMENTATION, [_spec("batch", 1, 8, 8, name="aux"), _spec("batch", 21, 8, 8, name="out")])
    check_task(Task.TENSOR, [_spec("batch", 10)])


def test_class_names_are_counted_against_channel_1_of_a_rank_4_output():
    check_labels(["a", "b", "c"], [_spec("batch", 3, 16, 16)])
    check_labels(["a", "b", "c"], [_spec("batch", "classes", 16, 16)])
    with pytest.raises(
        ConversionError, match=r"3 labels given but output 'y' has 11 classes \(shape \[batch, 11, 16"
    ):
        check_labels(["a", "b", "c"], [_spec("batch", 11, 16, 16)])
    with pytest.raises(ConversionError, match="3 labels given but output 'y' has 10 classes"):
        check_labels(["a", "b", "c"], [_spec("batch", 10)])


def test_a_segmenter_with_the_wrong_number_of_class_names_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"5 labels given but output 'output' has 3 classes"):
        build_artifact(
            models.fully_conv(),
            tmp_path / "fcn",
            input_shapes=[(1, 3, 16, 16)],
            labels=[str(i) for i in range(5)],
            fp16=False,
            openvino=False,
            torch_program=False,
        )
    assert not (tmp_path / "fcn").exists()
