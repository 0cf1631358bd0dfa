"""runtime/detection.py: matching against a reference, COCO-style mAP on hand-made cases, decoding."""

from __future__ import annotations

import numpy as np
import pytest
from infership.runtime import InvalidInputError, Preprocessing, Task, judge_for
from infership.runtime.detection import (
    COCO_IOUS,
    Detections,
    average_precision,
    box_iou,
    split_detections,
    to_original,
)
from infership.runtime.figures import figure_info


def _out(boxes, scores, labels, index=None) -> dict[str, np.ndarray]:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return {
        "boxes": boxes,
        "scores": np.asarray(scores, np.float32).reshape(n),
        "labels": np.asarray(labels, np.int64).reshape(n),
        "batch_index": np.zeros(n, np.int64) if index is None else np.asarray(index, np.int64),
    }


def _det(boxes, scores, labels) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(labels, np.int64),
    )


def test_task_and_figures_are_declared() -> None:
    assert Task.parse("object-detection") is Task.DETECTION
    assert judge_for("detection").task is Task.DETECTION
    assert figure_info("detections_matched").better.value == "higher"
    assert figure_info("box_iou_min").better.value == "higher"
    assert figure_info("map50").unit.value == "percent"


def test_box_iou() -> None:
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0


def test_split_by_batch_index() -> None:
    out = _out([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], [0.9, 0.8, 0.7], [1, 2, 3], [0, 2, 2])
    images = split_detections(out, images=3)
    assert [len(d) for d in images] == [1, 0, 2]
    assert images[2].labels.tolist() == [2, 3]
    with pytest.raises(InvalidInputError, match="batch_index"):
        split_detections(out, images=2)


def test_perfect_predictions_score_100() -> None:
    targets = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), "labels": np.array([1, 2])}]
    preds = [_det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 2])]
    assert average_precision(preds, targets) == pytest.approx(100.0)
    assert average_precision(preds, targets, iou_thresholds=COCO_IOUS) == pytest.approx(100.0)


def test_map_hand_computed() -> None:
    # Class 1: two objects in two images; predictions by score: TP, FP, TP.
    # precision 1, 1/2, 2/3 at recall 0.5, 0.5, 1.0 → monotone 1 (r ≤ 0.5), 2/3 (0.5 < r ≤ 1).
    targets = [
        {"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([1])},
        {"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([1])},
    ]
    preds = [
        _det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [1, 1]),
        _det([[0, 0, 10, 10]], [0.7], [1]),
    ]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert average_precision(preds, targets) == pytest.approx(100 * expected, abs=1e-3)


def test_map_counts_duplicates_and_wrong_labels_as_false_positives() -> None:
    targets = [{"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([3])}]
    # A duplicate of the same object: the second is a false positive after the object is taken.
    dup = [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [3, 3])]
    assert average_precision(dup, targets) == pytest.approx(100.0)  # the FP comes after full recall
    dup_first = [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.9], [4, 3])]  # class 4 has no ground truth
    assert average_precision(dup_first, targets) == pytest.approx(100.0)
    wrong = [_det([[0, 0, 10, 10]], [0.9], [2])]
    assert average_precision(wrong, targets) == pytest.approx(0.0)
    # An IoU of 0.6 counts at 0.5 but not at 0.7 and above: mAP@0.5:0.95 = 3/10 of it.
    shifted = [_det([[0, 0, 10, 10 * 0.6]], [0.9], [3])]
    assert average_precision(shifted, targets) == pytest.approx(100.0)
    assert average_precision(shifted, targets, iou_thresholds=COCO_IOUS) == pytest.approx(30.0)


def test_map_averages_over_classes_and_none_without_objects() -> None:
    targets = [{"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10]]), "labels": np.array([1, 2])}]
    preds = [_det([[0, 0, 10, 10]], [0.9], [1])]  # class 1 found, class 2 missed
    assert average_precision(preds, targets) == pytest.approx(50.0)
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}]
    assert average_precision([_det([], [], [])], empty) is None
    with pytest.raises(InvalidInputError, match="ground truth"):
        average_precision(preds, [])


def test_compare_identical_and_perturbed() -> None:
    judge = judge_for(Task.DETECTION)
    ref = [_out([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 8, 8]], [0.9, 0.8, 0.1], [1, 2, 3])]
    same = judge.compare(ref, ref)
    assert same.detections_matched == 1.0 and same.box_iou_min == pytest.approx(1.0)
    assert same.detections_reference == 2  # 0.1 is under the threshold
    assert same.label_agreement == 1.0 and same.loss_points == 0.0

    moved = [_out([[0, 0, 10, 11], [20, 20, 40, 40]], [0.88, 0.79], [1, 2])]
    m = judge.compare(ref, moved)
    assert m.detections_matched == 1.0
    assert m.box_iou_min == pytest.approx(100 / 110, abs=1e-5)
    assert m.score_diff_max == pytest.approx(0.02, abs=1e-6)

    relabelled = [_out([[0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 70, 70]], [0.9, 0.8, 0.95], [1, 5, 1])]
    r = judge.compare(ref, relabelled)
    # One pair matches; the relabelled one and the new confident box are not: 1 / (2 + 2 extra).
    assert r.detections_matched == pytest.approx(0.25)
    assert r.label_agreement == pytest.approx(0.5)
    assert r.loss_points == pytest.approx(75.0)


def test_nothing_compared_is_not_agreement() -> None:
    from infership.convert.validate import Tolerance

    judge = judge_for(Task.DETECTION)
    empty = [_out(np.zeros((0, 4)), [], [])]
    a = judge.compare(empty, empty)
    assert a.detections_reference == 0 and a.detections_matched is None
    (reason,) = Tolerance.fp32().judge(a)
    assert "no detection to compare" in reason
    assert Tolerance(min_matched=0.0).judge(a) == ()  # waived only when the caller says so


def test_compare_excuses_a_score_that_crosses_the_threshold() -> None:
    judge = judge_for(Task.DETECTION)
    ref = [_out([[0, 0, 10, 10]], [0.505], [1])]
    cand = [_out([[0, 0, 10, 10]], [0.495], [1])]
    assert judge.compare(ref, cand).detections_matched == 1.0
    assert judge.compare(cand, ref).detections_matched == 1.0


def test_compare_with_ground_truth_gives_map() -> None:
    judge = judge_for(Task.DETECTION)
    gt = [{"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([1])}]
    ref = [_out([[0, 0, 10, 10]], [0.9], [1])]
    worse = [_out([[30, 30, 40, 40]], [0.9], [1])]
    a = judge.compare(ref, worse, labels=gt)
    assert a.accuracy_reference == pytest.approx(100.0) and a.accuracy == pytest.approx(0.0)
    assert a.accuracy_drop == pytest.approx(100.0) and a.loss_points == pytest.approx(100.0)
    assert a.map50 == 0.0 and a.map50_95 == 0.0
    assert judge.score(ref, gt) == pytest.approx(100.0)
    assert "1 detections" in judge.summarise(ref[0], labels=["bg", "one"])[0]
    assert a.to_dict()["detections_matched"] == 0.0


def test_compare_refuses_outputs_that_are_not_detections() -> None:
    with pytest.raises(InvalidInputError, match="detection"):
        judge_for(Task.DETECTION).compare([{"x": np.zeros((1, 3))}], [{"x": np.zeros((1, 3))}])


def test_boxes_back_to_the_original_image() -> None:
    pre = Preprocessing(input="images", resize=(100, 200))
    # Original 50 × 400 (h × w): x is halved and y doubled by the resize.
    boxes = to_original(np.array([[20, 10, 40, 30]]), 50, 400, pre)
    np.testing.assert_allclose(boxes, [[40, 5, 80, 15]])
    short = Preprocessing(input="images", resize=64, crop=(64, 64))
    # 100 × 200 → 64 × 128, centre crop 64 × 64 from x = 32: input x 0 is original x 50.
    boxes = to_original(np.array([[0, 0, 64, 64]]), 100, 200, short)
    np.testing.assert_allclose(boxes, [[50, 0, 150, 100]])
