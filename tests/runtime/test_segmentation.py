"""Segmentation: class maps judged by pixel agreement and mIoU, and masks at the original image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from infership.runtime import InvalidInputError, Predictor, Task, infer_task, judge_for
from infership.runtime.figures import Better, Unit, figure_info
from infership.runtime.manifest import Preprocessing
from infership.runtime.preprocess import preprocess_image
from infership.runtime.segmentation import IGNORE_INDEX, main_output
from infership.runtime.spec import TensorSpec
from torch import nn


def _onehot(maps: np.ndarray, classes: int) -> np.ndarray:
    """Class maps [b, h, w] → scores [b, classes, h, w] whose argmax is the map."""
    return np.moveaxis(np.eye(classes, dtype=np.float32)[maps], -1, 1)


# ---------------------------------------------------------------------------------------------- the judge
def test_task_names_and_aliases():
    assert Task.parse("semantic_segmentation") is Task.SEGMENTATION
    assert Task.parse("image-segmentation") is Task.SEGMENTATION
    assert judge_for("segmentation").task is Task.SEGMENTATION


def test_pixel_agreement_and_miou_against_the_reference():
    ref = np.zeros((1, 4, 4), np.int64)
    ref[0, :2] = 1  # top half class 1
    cand = ref.copy()
    cand[0, 0, 0] = 0  # one of 16 pixels flips
    a = judge_for("segmentation").compare([{"out": _onehot(ref, 2)}], [{"out": _onehot(cand, 2)}])
    assert a.pixel_agreement == pytest.approx(15 / 16)
    # class 0: 8 / 9, class 1: 7 / 8
    assert a.miou_agreement == pytest.approx((8 / 9 + 7 / 8) / 2, abs=1e-6)
    assert a.top1_agreement is None
    assert a.loss_points == pytest.approx(100 * (1 - 15 / 16), abs=1e-3)


def test_miou_against_masks_ignores_255_and_scores_each_batch():
    truth = np.array([[[0, 0], [1, 1]], [[1, 1], [IGNORE_INDEX, 0]]])
    pred = np.array([[[0, 0], [1, 0]], [[1, 1], [1, 0]]])
    outputs = [{"out": _onehot(pred[:1], 2)}, {"out": _onehot(pred[1:], 2)}]
    judge = judge_for("segmentation")
    # counted pixels: truth 0 → pred 0,0,0 ; truth 1 → pred 1,0,1,1 ; class 0: IoU 3/4, class 1: 3/4
    assert judge.score(outputs, truth) == pytest.approx(75.0)
    truth[1, 1, 0] = 0  # the ignored pixel, counted: predicted 1 where truth is 0
    assert judge.score(outputs, truth) == pytest.approx(100 * (3 / 5 + 3 / 5) / 2)
    truth[1, 1, 0] = IGNORE_INDEX
    a = judge.compare(outputs, outputs, labels=truth)
    assert a.accuracy == a.accuracy_reference == pytest.approx(75.0)
    assert a.accuracy_drop == 0 and a.loss_points == 0


def test_the_main_output_is_out_and_aux_is_not_judged_for_classes():
    rng = np.random.default_rng(0)
    out = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    aux = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    ref = {"aux": aux, "out": out}
    cand = {"aux": -aux, "out": out}
    assert main_output(ref) == "out"
    a = judge_for("segmentation").compare([ref], [cand])
    assert a.pixel_agreement == 1.0
    assert a.outputs["aux"].max_abs_err > 0  # still compared element-wise


@pytest.mark.parametrize(
    ("outputs", "labels", "match"),
    [
        ({"logits": np.zeros((2, 5), np.float32)}, None, r"\[batch, classes, H, W\]"),
        ({"out": np.zeros((1, 2, 3, 3), np.float32)}, np.zeros((1, 4, 4), np.int64), "masks"),
        ({"out": np.zeros((1, 2, 3, 3), np.float32)}, np.full((1, 3, 3), 7), "mask values"),
        ({"out": np.zeros((1, 2, 3, 3), np.float32)}, np.zeros((1, 3, 3), np.float32), "integer"),
    ],
)
def test_outputs_and_masks_that_do_not_fit_are_refused(outputs, labels, match):
    with pytest.raises(InvalidInputError, match=match):
        judge_for("segmentation").compare([outputs], [outputs], labels=labels)


def test_figures_are_declared_and_the_task_is_inferred_from_class_names():
    assert figure_info("pixel_agreement").better is Better.HIGHER
    assert figure_info("miou_agreement").unit is Unit.FRACTION
    out = [TensorSpec("out", "float32", ("batch", 3, 32, 32))]
    assert infer_task(out, labels=["bg", "a", "b"]) is Task.SEGMENTATION
    assert infer_task(out, images=True) is Task.TENSOR  # a [b, 3, H, W] map may be an image


def test_summary_lists_the_largest_classes():
    maps = np.zeros((1, 4, 4), np.int64)
    maps[0, 0] = 2
    lines = judge_for("segmentation").summarise({"out": _onehot(maps, 3)}, labels=["bg", "cat", "dog"])
    assert lines == ["bg (75.0% of pixels), dog (25.0% of pixels), cat (0.0% of pixels)"]


# ---------------------------------------------------------------------------------------------- masks
class TinySegmenter(nn.Module):
    """Down, up, a skip connection and torchvision's dict output (``out`` and ``aux``)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8 + 3, classes, 1)
        self.aux = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.mid(self.down(x))
        up = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.head(torch.cat([up, x], 1)) * 4.0, "aux": self.aux(h)}


PRE = Preprocessing(input="x", resize=(32, 48), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from infership.convert import build_artifact

    model = TinySegmenter().eval()
    out = tmp_path_factory.mktemp("seg") / "tiny"
    art = build_artifact(
        model, out, input_shapes=[(1, 3, 32, 48)], preprocessing=PRE, fp16=False, task="segmentation"
    )
    return model, art


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour image (gradients and a disc), so class boundaries are few and clear."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 2.0, 3)
    disc = ((y - 0.5) ** 2 + (x - 0.4) ** 2 < 0.08).astype(float)
    img = np.stack([np.sin(a * 3 * x) ** 2, np.cos(b * 3 * y) ** 2, 0.6 * disc + 0.4 * c * x * y], -1)
    return (255 * np.clip(img, 0, 1)).astype(np.uint8)


def _torch_mask(model: nn.Module, image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """The reference: torch on the preprocessed image, logits resized to the photo (torchvision's way)."""
    x = torch.from_numpy(preprocess_image(image, pre))[None]
    with torch.no_grad():
        logits = model(x)["out"]
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy()


def test_the_build_checks_judge_class_maps(segmenter):
    _, art = segmenter
    assert art.manifest.task is Task.SEGMENTATION
    for variant in ("onnx-fp32", "openvino-fp32", "torch-fp32"):
        validation = art.manifest.variant(variant).validation
        assert validation["passed"] and validation["pixel_agreement"] == 1.0
        assert validation["miou_agreement"] == 1.0 and "top1_agreement" not in validation


@pytest.mark.parametrize(
    "backend", ["ort-cpu", pytest.param("openvino", marks=pytest.mark.openvino), "torch"]
)
def test_masks_at_the_original_size_agree_with_torch(segmenter, backend):
    model, art = segmenter
    images = [_photo(60, 90, 1), _photo(45, 50, 2), _photo(100, 61, 3)]
    with Predictor.load(art.root, backend=backend) as p:
        masks = p.segment(images)
    for image, mask in zip(images, masks, strict=True):
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        expected = _torch_mask(model, image, PRE)
        assert np.mean(mask == expected) >= 0.999
        assert len(np.unique(expected)) > 1  # the test can fail: several classes to place


def test_segment_batches_and_refuses_an_unknown_output(segmenter):
    from infership.runtime.segmentation import segment

    _, art = segmenter
    images = [_photo(60, 90, 1), _photo(45, 50, 2), _photo(60, 90, 3)]
    with Predictor.load(art.root, backend="ort-cpu") as p:
        one_by_one = [segment(p, img, batch_size=1)[0] for img in images]
        together = segment(p, images, batch_size=2)  # 60x90 twice in one batch, 45x50 on its own
        with pytest.raises(InvalidInputError, match="the model's outputs are"):
            p.segment(images[0], output="nope")
    assert len(together) == 3
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_recorded_crop_is_undone_and_unseen_pixels_get_the_fill(segmenter, tmp_path):
    from infership.convert import build_artifact

    model, _ = segmenter
    pre = Preprocessing(input="x", resize=40, crop=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    art = build_artifact(
        model, tmp_path / "crop", input_shapes=[(1, 3, 32, 32)], preprocessing=pre, fp16=False, openvino=False
    )
    image = _photo(80, 120, 4)
    with Predictor.load(art.root, backend="ort-cpu") as p:
        (mask,) = p.segment(image, unseen=IGNORE_INDEX)
    # 80x120 → 40x60, crop 32x32 at (4, 14): rows 8..71 and columns 28..91 of the photo were seen
    seen = np.zeros(mask.shape, bool)
    seen[8:72, 28:92] = True
    assert (mask[~seen] == IGNORE_INDEX).all() and (mask[seen] != IGNORE_INDEX).all()
    x = torch.from_numpy(preprocess_image(image, pre))[None]
    with torch.no_grad():
        logits = F.interpolate(model(x)["out"], size=(64, 64), mode="bilinear", align_corners=False)
    assert np.mean(mask[8:72, 28:92] == logits.argmax(1)[0].numpy()) >= 0.999


def test_segment_needs_recorded_preprocessing(tmp_path):
    from infership.convert import build_artifact

    art = build_artifact(
        TinySegmenter().eval(), tmp_path / "raw", input_shapes=[(1, 3, 16, 16)], fp16=False, openvino=False
    )
    with (
        Predictor.load(art.root, backend="ort-cpu") as p,
        pytest.raises(InvalidInputError, match="preprocess"),
    ):
        p.segment(_photo(16, 16, 0))


def test_the_example_unet_exports_from_its_file_with_the_task_inferred_from_class_names(tmp_path):
    from infership.convert import build_artifact

    root = Path(__file__).resolve().parents[2]
    art = build_artifact(
        f"{root}/examples/segmentation/unet.py:build_unet",
        tmp_path / "unet",
        num_classes=3,
        input_shapes=[(1, 3, 32, 32)],
        preprocessing="unit",
        labels=["background", "cat", "dog"],
        fp16=False,
        openvino=False,
    )
    assert art.manifest.task is Task.SEGMENTATION
    assert art.manifest.variant("onnx-fp32").validation["pixel_agreement"] == 1.0
    with Predictor.load(art.root, backend="ort-cpu") as p:
        (mask,) = p.segment(_photo(40, 56, 5))
    assert mask.shape == (40, 56) and mask.max() < 3


class _MaskSource:
    """Images with masks as labels (the array sources take one label per sample only)."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(7)
        self.x = np.stack([preprocess_image(_photo(32, 48, 10 + i), PRE) for i in range(n)])
        self.masks = rng.integers(0, 4, size=(n, 32, 48)).astype(np.int64)
        self.has_labels = True

    def __len__(self) -> int:
        return len(self.x)

    def read(self, indices):
        idx = list(indices)
        return {"x": self.x[idx]}, self.masks[idx]

    def describe(self):
        return {"kind": "test masks"}


def test_int8_is_validated_by_mask_agreement_and_miou(segmenter, tmp_path):
    import shutil

    from infership.calibration import CalibrationSet
    from infership.convert.int8 import quantize

    _, art = segmenter
    root = tmp_path / "copy"
    shutil.copytree(art.root, root)
    data = CalibrationSet(_MaskSource(24), batch_size=8)
    report = quantize(
        root, data, holdout=data, targets=["ort"], samples=16, max_accuracy_drop=50.0, routes=False
    )
    (target,) = report.targets
    metrics = target.metrics
    assert metrics.task == "segmentation" and metrics.pixel_agreement > 0.5
    assert metrics.accuracy is not None and metrics.accuracy_drop is not None  # mIoU against the masks
    assert metrics.loss_points == metrics.accuracy_drop
