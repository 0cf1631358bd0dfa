"""Detectors export with flat, data-dependent outputs, are judged as detections, and run on every backend."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from infership.convert.validate import Tolerance
from infership.runtime import InvalidInputError, Predictor, Preprocessing, Task, judge_for

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

_SCENES = Path(__file__).resolve().parents[2] / "examples" / "scenes.py"
SIZE = 128


def _scenes():
    name = "infership_example_scenes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _SCENES)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def tiny_faster_rcnn(backbone=None, anchors=None, pool=None):
    """A torchvision Faster R-CNN on a three-layer backbone (or the one given, with its anchor generator
    and region pooling): seconds to export, decisive enough scores (its class scores spread) that the
    comparison has detections to match."""
    from torch import nn
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, 2, 1),
            )
            self.out_channels = 32

        def forward(self, x):
            return torch.relu(self.body(x))

    torch.manual_seed(0)
    backbone = backbone or Backbone()
    model = FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors
        or AnchorGenerator(sizes=((16, 32, 64),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=pool or MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(backbone.out_channels * 49, 64),
        box_predictor=FastRCNNPredictor(64, 11),
        min_size=SIZE,
        max_size=SIZE,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
        box_detections_per_img=20,
    )
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def detector_artifact(tmp_path_factory: pytest.TempPathFactory):
    from infership.convert import build_artifact

    scenes = _scenes()
    out = tmp_path_factory.mktemp("detector") / "art"
    return build_artifact(
        tiny_faster_rcnn(),
        out,
        input_shapes=[(1, 3, SIZE, SIZE)],
        preprocessing=Preprocessing(input="images", resize=(SIZE, SIZE)),
        validation_data=[s.image for s in scenes.make_scenes(3, size=SIZE, split="holdout")],
        fp16=False,
        openvino=importlib.util.find_spec("openvino") is not None,
        torch_program=True,
        samples=1,
    )


def test_detector_outputs_are_named_and_data_dependent(detector_artifact) -> None:
    manifest = detector_artifact.manifest
    assert manifest.task is Task.DETECTION
    shapes = {o.name: (o.shape, o.dtype) for o in manifest.outputs}
    assert shapes == {
        "boxes": (("detections", 4), "float32"),
        "scores": (("detections",), "float32"),
        "labels": (("detections",), "int64"),
        "batch_index": (("detections",), "int64"),
    }
    assert manifest.inputs[0].shape == (1, 3, SIZE, SIZE)
    import onnx

    graph = onnx.load(str(detector_artifact.root / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "NonMaxSuppression" in ops
    assert "If" not in ops, "per-class NMS is traced branch-free (NNCF cannot quantize around If)"


def test_every_variant_matches_pytorch_as_detections(detector_artifact) -> None:
    ids = {v.id for v in detector_artifact.manifest.variants}
    assert {"onnx-fp32", "torch-fp32"} <= ids
    if importlib.util.find_spec("openvino"):
        assert "openvino-fp32" in ids
    for variant in detector_artifact.manifest.variants:
        if variant.precision != "fp32":
            continue
        val = variant.validation
        assert val["passed"] and val["task"] == "detection", variant.id
        assert val["detections_reference"] > 0, "the check compared real detections, not an empty set"
        assert val["detections_matched"] == 1.0
        assert val["box_iou_min"] >= 0.99
        assert val["real_samples"] == 3 and val["random_samples"] == 2


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino", "torch"])
def test_detect_gives_boxes_in_original_pixels(detector_artifact, backend: str) -> None:
    if backend == "openvino" and not importlib.util.find_spec("openvino"):
        pytest.skip("openvino is not installed")
    scenes = _scenes()
    images = [scenes.make_scene(i, size=(96, 200), split="holdout").image for i in range(2)]
    with Predictor.load(detector_artifact.root, backend=backend) as p:
        found = p.detect(images, score_threshold=0.0)
        assert len(found) == 2
        for image, d in zip(images, found, strict=True):
            assert len(d) > 0 and d.boxes.shape == (len(d), 4)
            assert (d.boxes[:, [0, 2]] <= image.shape[1]).all() and (
                d.boxes[:, [1, 3]] <= image.shape[0]
            ).all()
        # The same detections as predict() on the resized image, with x scaled by 200/128 and y by 96/128.
        raw = p.predict([images[0]])
    kept = raw["scores"] >= 0.0
    np.testing.assert_allclose(found[0].boxes[:, 0], raw["boxes"][kept, 0] * 200 / SIZE, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(found[0].boxes[:, 3], raw["boxes"][kept, 3] * 96 / SIZE, rtol=1e-5, atol=1e-3)


def test_backends_agree_with_each_other(detector_artifact) -> None:
    scenes = _scenes()
    feeds = [scenes.make_scene(i, size=SIZE, split="holdout").image for i in range(3)]
    with Predictor.load(detector_artifact.root, backend="torch") as p:
        ref = [p.predict([f]) for f in feeds]
    with Predictor.load(detector_artifact.root, backend="ort-cpu") as p:
        cand = [p.predict([f]) for f in feeds]
    a = judge_for(Task.DETECTION).compare(ref, cand)
    assert a.detections_matched == 1.0 and a.box_iou_min >= 0.99


def test_predict_on_several_images_keeps_each_detection_with_its_image(detector_artifact) -> None:
    # The model's batch is fixed at one image: a batch of three runs as three runs, and each run's
    # batch_index must name its image in the whole batch, not 0 three times.
    scenes = _scenes()
    images = [scenes.make_scene(i, size=SIZE, split="holdout").image for i in range(3)]
    with Predictor.load(detector_artifact.root, backend="ort-cpu") as p:
        one_by_one = [p.predict([img]) for img in images]
        together = p.predict(images)
    assert all(len(o["scores"]) > 0 for o in one_by_one)
    for name in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(together[name], np.concatenate([o[name] for o in one_by_one]))
    expected_index = np.concatenate([np.full(len(o["scores"]), i) for i, o in enumerate(one_by_one)])
    np.testing.assert_array_equal(together["batch_index"], expected_index)


def test_detect_refuses_other_artifacts(tiny_artifact) -> None:
    with (
        Predictor.load(tiny_artifact, backend="ort-cpu") as p,
        pytest.raises(InvalidInputError, match="detection"),
    ):
        p.detect(np.zeros((8, 8, 3), np.uint8))


def test_int8_detector_judged_by_detections(detector_artifact) -> None:
    from infership.calibration import CalibrationSet
    from infership.convert.int8 import quantize

    scenes = _scenes()
    data_py = Path(__file__).resolve().parents[2] / "examples" / "detection" / "data.py"
    spec = importlib.util.spec_from_file_location("infership_example_detection_data", data_py)
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    pre = detector_artifact.manifest.preprocessing

    def scene_set(split: str, count: int) -> CalibrationSet:
        made = scenes.make_scenes(count, size=SIZE, split=split)
        images, targets, _ = scenes.stack(made)
        return CalibrationSet(data.SceneSource(images, targets, pre, split), batch_size=1)

    targets = ["ort", "openvino"] if importlib.util.find_spec("openvino") else ["ort"]
    report = quantize(
        detector_artifact,
        scene_set("train", 8),
        holdout=scene_set("holdout", 6),
        targets=targets,
        latency_runs=2,
    )
    for rep in report.targets:
        assert rep.metrics.task == "detection"
        assert rep.metrics.detections_reference > 0 and rep.metrics.detections_matched is not None
        assert rep.metrics.accuracy_reference is not None  # mAP against the scenes' boxes
    from infership.runtime import Artifact

    ids = {v.id for v in Artifact.load(detector_artifact.root).manifest.variants}
    assert {"onnx-int8", *(["openvino-int8"] if "openvino" in targets else [])} <= ids


def test_dynamic_batch_is_refused(tmp_path: Path) -> None:
    from infership.convert import build_artifact

    with pytest.raises(InvalidInputError, match="fixed batch"):
        build_artifact(
            tiny_faster_rcnn(), tmp_path / "a", input_shapes=[(1, 3, SIZE, SIZE)], dynamic_batch=True
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "options"),
    [
        ("ssdlite320_mobilenet_v3_large", 320, {}),
        ("retinanet_resnet50_fpn", 128, {"min_size": 128, "max_size": 128, "score_thresh": 0.0}),
    ],
)
def test_torchvision_detectors_export(tmp_path: Path, name: str, size: int, options: dict) -> None:
    from infership.convert import build_artifact
    from torchvision.models import detection

    torch.manual_seed(0)
    model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=11, **options).eval()
    scenes = _scenes()
    art = build_artifact(
        model,
        tmp_path / name,
        input_shapes=[(1, 3, size, size)],
        preprocessing=Preprocessing(input="images", resize=(size, size)),
        validation_data=[scenes.make_scene(0, size=size).image],
        fp16=False,
        openvino=False,
        torch_program=False,
        simplify=False,
        samples=1,
        # Random weights: every score ties, so no image has detections to compare (the judge leaves such
        # images out). The check would refuse that as "nothing compared"; here it is waived on purpose.
        tolerance=replace(Tolerance.fp32(), min_matched=0.0),
    )
    assert art.manifest.task is Task.DETECTION
    assert [o.name for o in art.manifest.outputs] == ["boxes", "scores", "labels", "batch_index"]
    val = next(v for v in art.manifest.variants if v.id == "onnx-fp32").validation
    assert val["passed"]
    with Predictor.load(art.root, backend="ort-cpu") as p:
        (found,) = p.detect([scenes.make_scene(1, size=size).image], score_threshold=0.0)
    assert found.boxes.shape[1] == 4


def test_an_accuracy_budget_applies_to_detectors(detector_artifact) -> None:
    from infership.convert.int8.workflow import _check_budget_figure

    _check_budget_figure(detector_artifact.manifest, 1.0)  # detections give a loss figure: no refusal


def test_without_real_images_the_export_says_its_check_compared_nothing(tmp_path: Path) -> None:
    from infership.convert import build_artifact

    art = build_artifact(
        tiny_faster_rcnn(),
        tmp_path / "art",
        input_shapes=[(1, 3, SIZE, SIZE)],
        fp16=False,
        openvino=False,
        torch_program=False,
        samples=1,
    )
    notes = art.manifest.extra.get("notes", [])
    assert any("random inputs only" in n for n in notes), notes
    assert art.manifest.variant("onnx-fp32").validation["passed"]


def test_detect_refuses_unreadable_images_clearly(detector_artifact, tmp_path: Path) -> None:
    (tmp_path / "not-an-image.png").write_text("hello")
    with Predictor.load(detector_artifact.root, backend="ort-cpu") as p:
        for bad, match in [
            (str(tmp_path / "missing.png"), "cannot read image"),
            (str(tmp_path / "not-an-image.png"), "cannot read image"),
            (np.zeros((4, 8, 8, 3), np.uint8), "HWC or HW uint8 image array"),
        ]:
            with pytest.raises(InvalidInputError, match=match):
                p.detect(bad)


def test_pooled_regions_merge_back_in_order_as_torchvision_does() -> None:
    from infership.convert.detection import merge_levels_by_gather
    from torchvision.ops.poolers import _onnx_merge_levels

    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 4, (37,), generator=gen)
    levels[levels == 2] = 3  # one level with no region at all
    unmerged = [torch.randn(int((levels == lv).sum()), 8, 7, 7, generator=gen) for lv in range(4)]
    assert torch.equal(merge_levels_by_gather(levels, unmerged), _onnx_merge_levels(levels, unmerged))


def test_a_two_level_detector_pools_without_scattering_its_features(tmp_path: Path) -> None:
    """Region pooling over two feature levels (as FPN detectors pool) exports with one small scatter of
    region indices rather than one scatter of every pooled feature per level, and still matches torch."""
    from collections import OrderedDict

    import onnx
    from infership.convert import build_artifact
    from torch import nn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    class TwoLevels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fine = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1))
            self.coarse = nn.Conv2d(16, 16, 3, 2, 1)
            self.out_channels = 16

        def forward(self, x):
            fine = torch.relu(self.fine(x))
            return OrderedDict([("0", fine), ("1", torch.relu(self.coarse(fine)))])

    model = tiny_faster_rcnn(
        TwoLevels(),
        AnchorGenerator(sizes=((16,), (48,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2),
        MultiScaleRoIAlign(["0", "1"], 7, 2, canonical_scale=48, canonical_level=3),
    )
    scenes = _scenes()
    art = build_artifact(
        model,
        tmp_path / "art",
        input_shapes=[(1, 3, SIZE, SIZE)],
        preprocessing=Preprocessing(input="images", resize=(SIZE, SIZE)),
        validation_data=[s.image for s in scenes.make_scenes(3, size=SIZE, split="holdout")],
        fp16=False,
        openvino=False,
        torch_program=False,
        samples=1,
    )
    val = next(v for v in art.manifest.variants if v.id == "onnx-fp32").validation
    assert val["passed"] and val["detections_matched"] == 1.0 and val["detections_reference"] > 0
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(art.root / "model.onnx"))).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output]}
    scatters = [n for n in graph.node if n.op_type == "ScatterElements"]
    assert len([n for n in graph.node if n.op_type == "RoiAlign"]) == 2  # one per level
    assert len(scatters) == 1 and ranks[scatters[0].output[0]] == 1  # region indices, not features
