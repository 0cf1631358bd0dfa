"""Task segmentation at export: a model without per-pixel class scores is refused before any export work."""

from __future__ import annotations

import pytest
from infership.convert import build_artifact
from infership.convert.resolve import check_task
from infership.runtime import InvalidInputError, Task, TensorSpec

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
